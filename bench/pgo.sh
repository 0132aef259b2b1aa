#!/usr/bin/env bash
# Profile-guided release builds of multipult and of the benchmark's calibration server
# (docs/benchmarks.md, "Profile-guided builds"):
#
#   1. build each instrumented (`-Cprofile-generate`), for the host target only, so build
#      scripts and proc macros are not instrumented;
#   2. train: multipult on a fresh SQLite database answering the benchmark's request mix
#      (sign-in, anonymous and bearer queries, the viewer, an admin list, a profile update,
#      cached answers, 304 revalidations, every trace exported to the calibration server's
#      sink), the calibration server its two endpoints; each stopped with SIGTERM so its
#      counters are written on the way out;
#   3. merge the counters with `llvm-profdata` of rustc's own LLVM version (installed from
#      Debian as `llvm-N` when missing) and build again with `-Cprofile-use`.
#
#   bash bench/pgo.sh                  # prints the two binaries' paths
#   TRAIN=10s bash bench/pgo.sh        # longer training per request line (default 3s)
#   PGO=1 bash bench/side-by-side.sh   # the side-by-side benchmark on these builds
#
# The builds go to $CARGO_TARGET_DIR/pgo-generate and $CARGO_TARGET_DIR/pgo-use: each a full
# release build the first time (about 40 minutes in all on two cores); later the instrumented
# builds are reused while the sources do not change. Every request goes to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
TRAIN=${TRAIN:-3s}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/multipult/target}"
host=$(rustc -vV | awk '/^host:/ {print $2}')
llvm_major=$(rustc -vV | awk '/^LLVM version:/ {split($3, v, "."); print v[1]}')

# llvm-profdata must read the format rustc's LLVM writes: the same major version.
profdata=""
for candidate in "llvm-profdata-$llvm_major" "/usr/lib/llvm-$llvm_major/bin/llvm-profdata" \
  "$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"; do
  if command -v "$candidate" >/dev/null 2>&1; then
    profdata=$candidate
    break
  fi
done
if [ -z "$profdata" ]; then
  echo "installing llvm-$llvm_major (llvm-profdata for rustc's LLVM $llvm_major)…" >&2
  apt_install "llvm-$llvm_major" || {
    echo "no llvm-profdata for LLVM $llvm_major: install llvm-$llvm_major or rustup's llvm-tools" >&2
    exit 1
  }
  profdata="/usr/lib/llvm-$llvm_major/bin/llvm-profdata"
fi
need_wrk

bench_work pgo
# Stable paths: RUSTFLAGS are part of cargo's fingerprint, so the instrumented build is reused
# while the sources do not change; a profile's name carries its digest, so a new profile
# rebuilds and the same one does not.
profiles="$CARGO_TARGET_DIR/pgo-generate/profiles"
rm -rf "$profiles"
mkdir -p "$profiles"

# build PROFILE_FLAG OUT_DIR [cargo args…]: a release build for the host target with RUSTFLAGS.
build() {
  local flag=$1 dir=$2
  shift 2
  CARGO_TARGET_DIR="$CARGO_TARGET_DIR/$dir" RUSTFLAGS="${RUSTFLAGS:-} $flag" \
    cargo build --release --quiet --locked --target "$host" "$@"
}

echo "building instrumented (1/2)…" >&2
build "-Cprofile-generate=$profiles/multipult" pgo-generate --bin multipult
build "-Cprofile-generate=$profiles/calibration" pgo-generate --manifest-path bench/calibration/Cargo.toml
generated="$CARGO_TARGET_DIR/pgo-generate/$host/release"

# drive URL SCRIPT: one training line; fails when a response is not a 2xx or 3xx.
drive() {
  local out
  out=$(wrk -t2 -c16 -d"$TRAIN" -s "$2" "$1")
  if grep -q "Non-2xx" <<<"$out"; then
    echo "training request failed: $2" >&2
    cat "$2" >&2
    exit 1
  fi
}
# stop_gracefully PID: SIGTERM, then wait for the counters to be written.
stop_gracefully() {
  kill -TERM "$1"
  wait "$1" || true
}

# The calibration server first: its OTLP sink takes the traces of multipult's traced run.
bare_port=$(free_port)
stock_port=$(free_port)
"$generated/calibration" "$bare_port" "$stock_port" >"$work/calibration.log" 2>&1 &
calibration=$!
pids+=("$calibration")
until grep -q ready "$work/calibration.log" 2>/dev/null; do sleep 0.05; done

echo "training multipult…" >&2
data="$work/data"
mkdir -p "$data"
base=(PATH="$PATH" APP_ENV=test APP_PORT=0 DATA_DIR="$data"
  JWT_SECRET=bench-secret-bench-secret-bench-secret-32
  SECRETS_KEY=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=
  LOG_FORMAT=json LOG_LEVEL="warn,multipult::cli=info"
  RATE_LIMIT_USER=1000000000/1m RATE_LIMIT_ANONYMOUS=1000000000/1m
  COST_BUDGET_USER=1000000000/1h COST_BUDGET_ANONYMOUS=1000000000/1h
  DATABASE_URL="sqlite://$data/train.db?mode=rwc")
bin="$generated/multipult"
env -i "${base[@]}" "$bin" migrate fresh --force >/dev/null
for who in "bench@example.com" "admin@example.com --role admin"; do
  # shellcheck disable=SC2086 # the role flag is meant to split
  printf 'correct horse battery staple\n' | env -i "${base[@]}" "$bin" admin create-user --email $who >/dev/null
done
env -i "${base[@]}" "$bin" admin seed --users 100 >/dev/null

post() { # file, token ('' for none), body (JSON)
  {
    echo 'wrk.method = "POST"'
    echo 'wrk.headers["Content-Type"] = "application/json"'
    [ -n "$2" ] && echo "wrk.headers[\"Authorization\"] = \"Bearer $2\""
    echo "wrk.body = '$3'"
  } >"$1"
}
# Three servers in turn: the response cache off, on, and off with every trace exported.
for mode in uncached cached traced; do
  case $mode in
    uncached) settings=(RESPONSE_CACHE=false) ;;
    cached) settings=(RESPONSE_CACHE=true) ;;
    traced) settings=(RESPONSE_CACHE=false OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$bare_port"
      OTEL_TRACES_SAMPLER_ARG=1) ;;
  esac
  env -i "${base[@]}" "${settings[@]}" "$bin" serve >"$data/server.log" 2>&1 &
  server=$!
  pids+=("$server")
  address=""
  for _ in $(seq 1 300); do
    address=$(grep -o '"address":"[^"]*"' "$data/server.log" 2>/dev/null | head -1 | cut -d'"' -f4 || true)
    [ -n "$address" ] && break
    sleep 0.05
  done
  [ -n "$address" ] || { cat "$data/server.log" >&2; exit 1; }
  until curl -sf "http://$address/health/ready" >/dev/null; do sleep 0.05; done
  url="http://$address/graphql"
  token() {
    curl -s "$url" -H 'content-type: application/json' \
      -d "{\"query\":\"mutation { login(input: {email: \\\"$1\\\", password: \\\"correct horse battery staple\\\"}) { accessToken } }\"}" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["login"]["accessToken"])'
  }
  user=$(token bench@example.com)
  admin=$(token admin@example.com)
  post "$work/l.lua" "" '{"query":"{ apiInfo { version } }"}' && drive "$url" "$work/l.lua"
  if [ "$mode" = traced ]; then
    post "$work/l.lua" "$user" '{"query":"{ me { id email roles { name } } }"}' && drive "$url" "$work/l.lua"
    stop_gracefully "$server"
    continue
  fi
  post "$work/l.lua" "$user" '{"query":"{ apiInfo { version } }"}' && drive "$url" "$work/l.lua"
  post "$work/l.lua" "$user" '{"query":"{ me { id } }"}' && drive "$url" "$work/l.lua"
  post "$work/l.lua" "$user" '{"query":"{ me { id email roles { name } } }"}' && drive "$url" "$work/l.lua"
  post "$work/l.lua" "$admin" '{"query":"{ allUsers(limit: 20) { items { id email } } }"}' && drive "$url" "$work/l.lua"
  if [ "$mode" = cached ]; then
    etag=$(curl -s -D - -o /dev/null "$url?query=%7B%20apiInfo%20%7B%20version%20%7D%20%7D" |
      awk 'tolower($1)=="etag:" {print $2}' | tr -d '\r')
    cat >"$work/l.lua" <<LUA
wrk.method = "GET"
wrk.path = "/graphql?query=%7B%20apiInfo%20%7B%20version%20%7D%20%7D"
wrk.headers["If-None-Match"] = '$etag'
LUA
    drive "http://$address" "$work/l.lua"
  else
    # Writes: a profile update (a mutation: the user's row written, its cache tags bumped).
    post "$work/l.lua" "$user" '{"query":"mutation ($name: String) { updateProfile(input: {displayName: $name}) { id displayName } }","variables":{"name":"Bench"}}'
    drive "$url" "$work/l.lua"
  fi
  stop_gracefully "$server"
done

echo "training the calibration server…" >&2
: >"$work/empty.lua"
drive "http://127.0.0.1:$bare_port/" "$work/empty.lua"
post "$work/l.lua" "" '{"query":"{ users(limit: 20) { id name } }"}'
drive "http://127.0.0.1:$stock_port/graphql" "$work/l.lua"
stop_gracefully "$calibration"

merged() { # name -> the merged profile's path, named by its digest
  "$profdata" merge -o "$profiles/$1.profdata" "$profiles/$1"/*.profraw
  local digest
  digest=$(sha256sum "$profiles/$1.profdata" | cut -c1-16)
  mkdir -p "$CARGO_TARGET_DIR/pgo-use/profiles"
  rm -f "$CARGO_TARGET_DIR/pgo-use/profiles/$1-"*.profdata
  cp "$profiles/$1.profdata" "$CARGO_TARGET_DIR/pgo-use/profiles/$1-$digest.profdata"
  echo "$CARGO_TARGET_DIR/pgo-use/profiles/$1-$digest.profdata"
}
multipult_profile=$(merged multipult)
calibration_profile=$(merged calibration)

echo "building with the profiles (2/2)…" >&2
build "-Cprofile-use=$multipult_profile" pgo-use --bin multipult
build "-Cprofile-use=$calibration_profile" pgo-use --manifest-path bench/calibration/Cargo.toml
echo "$CARGO_TARGET_DIR/pgo-use/$host/release/multipult"
echo "$CARGO_TARGET_DIR/pgo-use/$host/release/calibration"
