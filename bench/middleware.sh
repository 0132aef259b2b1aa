#!/usr/bin/env bash
# Throughput and latency of an authenticated GraphQL query with the whole middleware stack on
# (rate limits, cost budgets, CSRF check, persisted-query lookup) and off, plus the 304
# revalidation path. Installs wrk from Debian's packages when missing.
#
#   bash bench/middleware.sh            # 15 s per run
#   DURATION=30s CONNECTIONS=64 bash bench/middleware.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
DURATION=${DURATION:-15s}
CONNECTIONS=${CONNECTIONS:-32}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/multipult/target}"

need_wrk
cargo build --release --quiet --bin multipult
BIN="$CARGO_TARGET_DIR/release/multipult"
work=$(mktemp -d /tmp/multipult-bench.XXXXXX)
trap 'kill $(cat "$work"/pid 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT

base_env=(PATH="$PATH" APP_ENV=test APP_PORT=0 DATA_DIR="$work" JWT_SECRET=bench-secret-bench-secret-bench-secret-32
  SECRETS_KEY=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= DATABASE_URL="sqlite://$work/bench.db?mode=rwc"
  LOG_FORMAT=json LOG_LEVEL="warn,multipult::cli=info")

printf 'correct horse battery staple\n' | env -i "${base_env[@]}" "$BIN" admin create-user --email bench@example.com >/dev/null

start() {
  env -i "${base_env[@]}" "$@" "$BIN" serve >"$work/server.log" 2>&1 &
  echo $! >"$work/pid"
  for _ in $(seq 1 100); do
    address=$(python3 -c 'import json,sys
for line in open(sys.argv[1]):
    try: e=json.loads(line)
    except ValueError: continue
    if e.get("message")=="listening": print(e["address"]); break' "$work/server.log" 2>/dev/null || true)
    [ -n "$address" ] && return 0
    sleep 0.1
  done
  echo "server did not start" >&2; cat "$work/server.log" >&2; exit 1
}
stop() { kill "$(cat "$work/pid")" 2>/dev/null || true; wait "$(cat "$work/pid")" 2>/dev/null || true; }

token() {
  curl -s "http://$address/graphql" -H 'content-type: application/json' \
    -d '{"query":"mutation { login(input: {email: \"bench@example.com\", password: \"correct horse battery staple\"}) { accessToken } }"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["login"]["accessToken"])'
}

run() { # label, lua script
  local label=$1 script=$2
  local out
  out=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$script" "http://$address/graphql")
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  printf '| %s | %s | %s | %s | %s |\n' "$label" "$rps" "$p50" "$p99" "${non2xx:-0}"
}

query_script() { # token
  cat >"$work/query.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $1"
wrk.body = '{"query":"{ me { id email roles { name } } apiInfo { version } }"}'
LUA
}

revalidate_script() { # etag
  cat >"$work/revalidate.lua" <<LUA
wrk.method = "GET"
wrk.path = "/graphql?query=%7B%20apiInfo%20%7B%20version%20%7D%20%7D"
wrk.headers["Apollo-Require-Preflight"] = "true"
wrk.headers["If-None-Match"] = '$1'
LUA
}

echo "multipult middleware benchmark: $(nproc) cores, $CONNECTIONS connections, $DURATION per run"
echo
echo "| run | requests/s | p50 | p99 | non-2xx |"
echo "|---|---|---|---|---|"

# Whole stack on (limits high enough never to refuse: this measures their cost, not their effect).
start RATE_LIMIT_USER=1000000000/1m RATE_LIMIT_ANONYMOUS=1000000000/1m \
  COST_BUDGET_USER=1000000000/1h COST_BUDGET_ANONYMOUS=1000000000/1h
query_script "$(token)"
run "authenticated query, middleware on" "$work/query.lua"
etag=$(curl -s -D - -o /dev/null -H 'apollo-require-preflight: true' "http://$address/graphql?query=%7B%20apiInfo%20%7B%20version%20%7D%20%7D" | awk 'tolower($1)=="etag:" {print $2}' | tr -d '\r')
revalidate_script "$etag"
run "304 revalidation, middleware on" "$work/revalidate.lua"
stop

start RATE_LIMIT_ENABLED=false COST_BUDGET_USER=off COST_BUDGET_ANONYMOUS=off CSRF_PREVENTION=false PERSISTED_QUERIES=off
query_script "$(token)"
run "authenticated query, middleware off" "$work/query.lua"
stop
