#!/usr/bin/env bash
# Side-by-side throughput and latency, in one run on one machine, as ratios to references
# started in the same run (docs/benchmarks.md):
#
#   - calibration (bench/calibration): bare axum answering fixed bytes, and stock
#     async-graphql-axum without middleware serving `{ users(limit: 20) { id name } }` from memory
#     — THE reference every ratio divides by (measured first and last; their mean is used);
#   - multipult, release build, embedded backends, with every middleware on (limits high enough
#     never to refuse), with the response cache off and on, then with the middleware off;
#   - the same multipult lines against PostgreSQL + Redis when BENCH_DATABASE_URL and
#     BENCH_REDIS_URL are set (the database is emptied first: use a throwaway one);
#   - the full-stack line with traces on (exported to a sink in the calibration server): every
#     trace, then 1 % of them — against the same line with traces off (the default);
#   - RSS idle and under load, and cold start to ready (migrated database).
#
#   bash bench/side-by-side.sh
#   DURATION=15s CONNECTIONS=64 bash bench/side-by-side.sh
#   BENCH_DATABASE_URL=postgres://multipult:multipult@127.0.0.1:5432/multipult \
#   BENCH_REDIS_URL=redis://127.0.0.1:6379 bash bench/side-by-side.sh
#
# Installs wrk from Debian's packages when missing. Every request goes to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-8s}
CONNECTIONS=${CONNECTIONS:-32}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/multipult/target}"

if ! command -v wrk >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
echo "building (release)…" >&2
cargo build --release --quiet --bin multipult
cargo build --release --quiet --manifest-path bench/calibration/Cargo.toml
BIN="$CARGO_TARGET_DIR/release/multipult"
CALIBRATION="$CARGO_TARGET_DIR/release/calibration"

work=$(mktemp -d /tmp/multipult-side.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# --- the references ------------------------------------------------------------------------
bare_port=$(free_port)
stock_port=$(free_port)
"$CALIBRATION" "$bare_port" "$stock_port" >"$work/calibration.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  grep -q ready "$work/calibration.log" 2>/dev/null && break
  sleep 0.1
done

cat >"$work/stock.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"query":"{ users(limit: 20) { id name } }"}'
LUA

# Runs wrk; prints "rps p50_ms p99_ms non2xx". Args: url [script]
measure() {
  local url=$1 script=${2:-}
  local out
  if [ -n "$script" ]; then
    out=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$script" "$url")
  else
    out=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$url")
  fi
  python3 - "$out" <<'PY'
import re, sys
out = sys.argv[1]
def ms(label):
    m = re.search(r"^\s*%s\s+([\d.]+)(us|ms|s)\s*$" % label, out, re.M)
    if not m: return float("nan")
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
non = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
print(rps.group(1) if rps else "0", "%.2f" % ms("50%"), "%.2f" % ms("99%"), non.group(1) if non else "0")
PY
}

rows=()
reference=""
row() { # label, "rps p50 p99 non2xx"
  local label=$1
  read -r rps p50 p99 non <<<"$2"
  rows+=("$label|$rps|$p50|$p99|$non")
}

echo "references…" >&2
bare=$(measure "http://127.0.0.1:$bare_port/")
row "bare axum, fixed bytes" "$bare"
stock_first=$(measure "http://127.0.0.1:$stock_port/graphql" "$work/stock.lua")
row "stock async-graphql-axum, users(limit: 20) (first)" "$stock_first"

# --- multipult -------------------------------------------------------------------------------
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# Starts multipult with extra env; sets $address and $server_pid. Args: label env...
start() {
  local data=$1
  shift
  mkdir -p "$data"
  env -i PATH="$PATH" APP_ENV=test APP_PORT=0 DATA_DIR="$data" \
    JWT_SECRET=bench-secret-bench-secret-bench-secret-32 \
    SECRETS_KEY=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= \
    LOG_FORMAT=json LOG_LEVEL="warn,multipult::cli=info" \
    RATE_LIMIT_USER=1000000000/1m RATE_LIMIT_ANONYMOUS=1000000000/1m \
    COST_BUDGET_USER=1000000000/1h COST_BUDGET_ANONYMOUS=1000000000/1h \
    "${backend_env[@]}" "$@" "$BIN" serve >"$data/server.log" 2>&1 &
  server_pid=$!
  pids+=("$server_pid")
  address=""
  for _ in $(seq 1 300); do
    address=$(python3 -c 'import json,sys
for line in open(sys.argv[1]):
    try: e=json.loads(line)
    except ValueError: continue
    if e.get("message")=="listening": print(e["address"]); break' "$data/server.log" 2>/dev/null || true)
    [ -n "$address" ] && break
    sleep 0.05
  done
  if [ -z "$address" ]; then
    echo "multipult did not start:" >&2
    cat "$data/server.log" >&2
    exit 1
  fi
}
stop() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
}

login() { # email -> token
  curl -s "http://$address/graphql" -H 'content-type: application/json' \
    -d "{\"query\":\"mutation { login(input: {email: \\\"$1\\\", password: \\\"correct horse battery staple\\\"}) { accessToken } }\"}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["login"]["accessToken"])'
}

post_script() { # file, token ('' for none), query
  local file=$1 token=$2 query=$3
  {
    echo 'wrk.method = "POST"'
    echo 'wrk.headers["Content-Type"] = "application/json"'
    [ -n "$token" ] && echo "wrk.headers[\"Authorization\"] = \"Bearer $token\""
    echo "wrk.body = '{\"query\":\"$query\"}'"
  } >"$file"
}

revalidate_script() { # file, etag
  cat >"$1" <<LUA
wrk.method = "GET"
wrk.path = "/graphql?query=%7B%20apiInfo%20%7B%20version%20%7D%20%7D"
wrk.headers["If-None-Match"] = '$2'
LUA
}

# The kernel's high-water mark of the server's resident memory (no sampling process competing
# with the measured server for the CPU).
peak_rss_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

bench_multipult() { # suffix for labels
  local suffix=$1
  local data="$work/mp$suffix"
  mkdir -p "$data"
  if [ ${#backend_env[@]} -eq 0 ]; then
    backend_env=(DATABASE_URL="sqlite://$data/bench.db?mode=rwc")
  fi
  local seed_env=(PATH="$PATH" APP_ENV=test DATA_DIR="$data" JWT_SECRET=bench-secret-bench-secret-bench-secret-32
    SECRETS_KEY=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= LOG_LEVEL=warn "${backend_env[@]}")
  env -i "${seed_env[@]}" "$BIN" migrate fresh --force >/dev/null
  printf 'correct horse battery staple\n' | env -i "${seed_env[@]}" "$BIN" admin create-user --email bench@example.com >/dev/null
  printf 'correct horse battery staple\n' | env -i "${seed_env[@]}" "$BIN" admin create-user --email admin@example.com --role admin >/dev/null
  env -i "${seed_env[@]}" "$BIN" admin seed --users 100 >/dev/null

  # Cold start to ready, on the migrated database.
  local t0 t1
  t0=$(date +%s%N)
  start "$data" RESPONSE_CACHE=false
  until curl -sf "http://$address/health/ready" >/dev/null; do sleep 0.01; done
  t1=$(date +%s%N)
  cold_ms=$(((t1 - t0) / 1000000))
  sleep 1
  idle_kb=$(rss_kb "$server_pid")

  local user admin
  user=$(login bench@example.com)
  admin=$(login admin@example.com)
  post_script "$work/anon.lua" "" "{ apiInfo { version } }"
  post_script "$work/bearer-info.lua" "$user" "{ apiInfo { version } }"
  post_script "$work/me-id.lua" "$user" "{ me { id } }"
  post_script "$work/me-roles.lua" "$user" "{ me { id email roles { name } } }"
  post_script "$work/all-users.lua" "$admin" "{ allUsers(limit: 20) { items { id email } } }"

  echo "multipult$suffix, response cache off…" >&2
  local out
  out=$(measure "http://$address/graphql" "$work/anon.lua")
  row "multipult$suffix anonymous { apiInfo { version } }, full stack, uncached" "$out"
  anon_uncached=$out
  row "multipult$suffix bearer { apiInfo { version } }, uncached" "$(measure "http://$address/graphql" "$work/bearer-info.lua")"
  row "multipult$suffix bearer { me { id } }, uncached" "$(measure "http://$address/graphql" "$work/me-id.lua")"
  row "multipult$suffix bearer { me { id email roles { name } } }, uncached" "$(measure "http://$address/graphql" "$work/me-roles.lua")"
  row "multipult$suffix admin { allUsers(limit: 20) { items { id email } } }, uncached" "$(measure "http://$address/graphql" "$work/all-users.lua")"
  load_kb=$(peak_rss_kb "$server_pid")
  stop

  echo "multipult$suffix, response cache on…" >&2
  start "$data"
  user=$(login bench@example.com)
  admin=$(login admin@example.com)
  post_script "$work/me-roles.lua" "$user" "{ me { id email roles { name } } }"
  post_script "$work/all-users.lua" "$admin" "{ allUsers(limit: 20) { items { id email } } }"
  row "multipult$suffix anonymous { apiInfo { version } }, cached (public)" "$(measure "http://$address/graphql" "$work/anon.lua")"
  row "multipult$suffix bearer { me { id email roles { name } } }, cached" "$(measure "http://$address/graphql" "$work/me-roles.lua")"
  row "multipult$suffix admin { allUsers(limit: 20) { items { id email } } }, cached" "$(measure "http://$address/graphql" "$work/all-users.lua")"
  local etag
  etag=$(curl -s -D - -o /dev/null "http://$address/graphql?query=%7B%20apiInfo%20%7B%20version%20%7D%20%7D" |
    awk 'tolower($1)=="etag:" {print $2}' | tr -d '\r')
  revalidate_script "$work/revalidate.lua" "$etag"
  row "multipult$suffix 304 revalidation of a cached query" "$(measure "http://$address/graphql" "$work/revalidate.lua")"
  stop

  echo "multipult$suffix, middleware off…" >&2
  start "$data" RESPONSE_CACHE=false RATE_LIMIT_ENABLED=false COST_BUDGET_USER=off COST_BUDGET_ANONYMOUS=off \
    CSRF_PREVENTION=false PERSISTED_QUERIES=off
  local off
  off=$(measure "http://$address/graphql" "$work/anon.lua")
  row "multipult$suffix anonymous { apiInfo { version } }, middleware off, uncached" "$off"
  stop
  if [ -z "$suffix" ]; then
    # Traces exported to the calibration server's sink: every trace, then 1 % of them.
    echo "multipult$suffix, traces on…" >&2
    start "$data" RESPONSE_CACHE=false OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$bare_port"
    row "multipult$suffix anonymous { apiInfo { version } }, full stack, traces on (every trace)" \
      "$(measure "http://$address/graphql" "$work/anon.lua")"
    stop
    start "$data" RESPONSE_CACHE=false OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$bare_port" \
      OTEL_TRACES_SAMPLER_ARG=0.01
    row "multipult$suffix anonymous { apiInfo { version } }, full stack, traces on (1 % sampled)" \
      "$(measure "http://$address/graphql" "$work/anon.lua")"
    stop
  fi
  read -r on_rps _ <<<"$anon_uncached"
  read -r off_rps _ <<<"$off"
  extras+=("multipult$suffix: cold start to ready ${cold_ms} ms; RSS idle $((idle_kb / 1024)) MB, peak (the uncached lines) $((load_kb / 1024)) MB; full stack / middleware off = $(python3 -c "print('%.2f' % ($on_rps / $off_rps))")")
}

extras=()
backend_env=()
bench_multipult ""
if [ -n "${BENCH_DATABASE_URL:-}" ] && [ -n "${BENCH_REDIS_URL:-}" ]; then
  backend_env=(DATABASE_URL="$BENCH_DATABASE_URL" REDIS_URL="$BENCH_REDIS_URL" REDIS_KEY_PREFIX="bench-$$:")
  bench_multipult " (PostgreSQL + Redis)"
fi

stock_last=$(measure "http://127.0.0.1:$stock_port/graphql" "$work/stock.lua")
row "stock async-graphql-axum, users(limit: 20) (last)" "$stock_last"
read -r s1 _ <<<"$stock_first"
read -r s2 _ <<<"$stock_last"
reference=$(python3 -c "print(($s1 + $s2) / 2)")
read -r bare_rps _ <<<"$bare"

echo
echo "multipult side by side: $(nproc) cores, wrk -t2 -c$CONNECTIONS -d$DURATION, $(date -u +%Y-%m-%d)"
echo "reference: stock async-graphql-axum, mean of first and last = $(printf '%.0f' "$reference") req/s"
echo
echo "| line | req/s | p50 ms | p99 ms | non-2xx | × stock | % of bare axum |"
echo "|---|---|---|---|---|---|---|"
for r in "${rows[@]}"; do
  IFS='|' read -r label rps p50 p99 non <<<"$r"
  python3 - "$label" "$rps" "$p50" "$p99" "$non" "$reference" "$bare_rps" <<'PY'
import sys
label, rps, p50, p99, non, ref, bare = sys.argv[1:]
rps, ref, bare = float(rps), float(ref), float(bare)
print(f"| {label} | {rps:,.0f} | {p50} | {p99} | {non} | {rps / ref:.2f} | {100 * rps / bare:.0f} % |")
PY
done
echo
for e in "${extras[@]}"; do echo "- $e"; done
