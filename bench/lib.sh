# Shared by the benchmark scripts (`source bench/lib.sh` after `cd` to the repository root):
# a work directory removed on exit with every process listed in `pids`, a free loopback port,
# and Debian packages installed when missing.

# bench_work NAME: makes $work (/tmp/multipult-NAME.XXXXXX); on exit, kills $pids and removes it.
bench_work() {
  work=$(mktemp -d "/tmp/multipult-$1.XXXXXX")
  pids=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}

# A TCP port on 127.0.0.1 free at the moment of asking.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# apt_install PACKAGE…: from Debian's packages, quietly; fails where there is no apt-get.
apt_install() {
  command -v apt-get >/dev/null 2>&1 || return 1
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; } >/dev/null
}

# The load generator, installed when missing.
need_wrk() {
  command -v wrk >/dev/null 2>&1 || apt_install wrk
}
