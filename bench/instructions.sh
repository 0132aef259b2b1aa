#!/usr/bin/env bash
# User-space instructions per request, counted by valgrind's cachegrind: a measure that does
# not move with the machine's load, for telling a change's effect from a shared machine's noise
# (docs/benchmarks.md, "Instructions per request"). Installs valgrind (Debian) when missing.
#
#   bash bench/instructions.sh                      # the working tree (profiling build)
#   bash bench/instructions.sh OLD_BINARY NEW_BINARY  # compares builds, line by line
#   REQUESTS=5000 bash bench/instructions.sh
#
# Each line runs the server under cachegrind twice, answering WARMUP and then WARMUP + REQUESTS
# requests on one keep-alive connection; the difference of the two totals over REQUESTS is the
# figure (start-up, migrations and the first requests cancel out). Counts only the server's
# user space: the kernel's side of the sockets and time spent waiting are not in it. The stock
# async-graphql-axum reference of bench/side-by-side.sh (`users(limit: 20) { id name }`, from
# memory) is counted the same way, and each line is also given as a ratio to it.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
REQUESTS=${REQUESTS:-3000}
WARMUP=${WARMUP:-300}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/multipult/target}"

command -v valgrind >/dev/null 2>&1 || apt_install valgrind
if [ $# -eq 0 ]; then
  cargo build --profile profiling --quiet --bin multipult
  set -- "$CARGO_TARGET_DIR/profiling/multipult"
fi
cargo build --release --quiet --manifest-path bench/calibration/Cargo.toml
CALIBRATION="$CARGO_TARGET_DIR/release/calibration"

work=$(mktemp -d /tmp/multipult-instructions.XXXXXX)
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

base_env=(PATH="$PATH" APP_ENV=test APP_PORT=0 JWT_SECRET=bench-secret-bench-secret-bench-secret-32
  SECRETS_KEY=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= LOG_FORMAT=json LOG_LEVEL="warn,multipult::cli=info"
  RATE_LIMIT_USER=1000000000/1m RATE_LIMIT_ANONYMOUS=1000000000/1m RATE_LIMIT_RULES=
  COST_BUDGET_USER=1000000000/1h COST_BUDGET_ANONYMOUS=1000000000/1h JOB_WORKERS=0)

address_of() { # log file
  python3 -c 'import json,sys
for line in open(sys.argv[1]):
    try: e=json.loads(line)
    except ValueError: continue
    if e.get("message")=="listening": print(e["address"]); break' "$1" 2>/dev/null || true
}

# start DIR WRAPPER... -- BINARY ENV...: starts a server on DIR's database; sets $server, $address
start() {
  local dir=$1; shift
  local wrapper=()
  while [ "$1" != "--" ]; do wrapper+=("$1"); shift; done
  shift
  local bin=$1; shift
  env -i "${base_env[@]}" DATA_DIR="$dir" DATABASE_URL="sqlite://$dir/bench.db?mode=rwc" "$@" \
    "${wrapper[@]}" "$bin" serve >"$dir/server.log" 2>&1 &
  server=$!
  address=""
  for _ in $(seq 1 1200); do
    address=$(address_of "$dir/server.log")
    [ -n "$address" ] && break
    sleep 0.1
  done
  [ -n "$address" ] || { echo "server did not start" >&2; cat "$dir/server.log" >&2; exit 1; }
  until curl -sf "http://$address/health/ready" >/dev/null; do sleep 0.1; done
}
stop() { kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; server=""; }

login() { # email
  curl -s "http://$address/graphql" -H 'content-type: application/json' \
    -d "{\"query\":\"mutation { login(input: {email: \\\"$1\\\", password: \\\"correct horse battery staple\\\"}) { accessToken } }\"}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["login"]["accessToken"])'
}

# send COUNT METHOD TOKEN QUERY [IF_NONE_MATCH]: COUNT requests to $address/graphql on one
# connection; fails on an unexpected status (a line must measure what it says).
send() {
  python3 - "$address" "$@" <<'PY'
import http.client, json, sys, urllib.parse
address, count, method, token, query = sys.argv[1:6]
etag = sys.argv[6] if len(sys.argv) > 6 else ""
host, port = address.rsplit(":", 1)
connection = http.client.HTTPConnection(host, int(port))
headers = {"content-type": "application/json", "apollo-require-preflight": "true"}
if token:
    headers["authorization"] = "Bearer " + token
if etag:
    headers["if-none-match"] = etag
expected = 304 if etag else 200
for _ in range(int(count)):
    if method == "GET":
        connection.request("GET", "/graphql?" + urllib.parse.urlencode({"query": query}), headers=headers)
    else:
        connection.request("POST", "/graphql", json.dumps({"query": query}), headers)
    response = connection.getresponse()
    body = response.read()
    if response.status != expected or (expected == 200 and b'"errors"' in body):
        sys.exit(f"unexpected answer {response.status}: {body[:200]!r}")
PY
}

# count BINARY TEMPLATE COUNT METHOD TOKEN QUERY ETAG ENV...: total instructions for COUNT requests
count() {
  local bin=$1 template=$2 n=$3 method=$4 token=$5 query=$6 etag=$7
  shift 7
  local dir="$work/run"
  rm -rf "$dir"
  cp -r "$template" "$dir"
  start "$dir" valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file="$dir/cg.out" -- "$bin" "$@"
  send "$n" "$method" "$token" "$query" "$etag"
  stop
  grep -o 'I *refs: *[0-9,]*' "$dir/server.log" | tr -d ', ' | cut -d: -f2
}

# reference COUNT: total instructions of the stock reference answering COUNT requests
reference() {
  local n=$1 log="$work/calibration.log" ports
  ports=$(python3 -c 'import socket
for _ in range(2):
    s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()' | tr '\n' ' ')
  read -r bare_port stock_port <<<"$ports"
  valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file="$work/calibration.cg" \
    "$CALIBRATION" "$bare_port" "$stock_port" >"$log" 2>&1 &
  server=$!
  for _ in $(seq 1 600); do
    grep -q ready "$log" 2>/dev/null && break
    sleep 0.1
  done
  address="127.0.0.1:$stock_port"
  send "$n" POST "" '{ users(limit: 20) { id name } }' ""
  stop
  grep -o 'I *refs: *[0-9,]*' "$log" | tr -d ', ' | cut -d: -f2
}

ME='{ me { id email roles { name } } }'
ALL='{ allUsers(limit: 20) { items { id email } } }'
API='{ apiInfo { version } }'

printf 'multipult user-space instructions per request: %s requests after %s, cachegrind\n\n' "$REQUESTS" "$WARMUP"
header="| line |"
rule="|---|"
for bin in "$@"; do
  header+=" $bin |"
  rule+="---|"
done
[ $# -gt 1 ] && header+=" last / first |" && rule+="---|"

small=$(reference "$WARMUP")
large=$(reference $((WARMUP + REQUESTS)))
stock=$(((large - small) / REQUESTS))
printf 'stock async-graphql-axum reference, users(limit: 20) { id name }: %s instructions per request\n\n' "$stock"

declare -A figures
lines=("anonymous $API, uncached" "bearer $ME, uncached" "admin $ALL, uncached (SQLite)"
  "bearer $ME, response cache" "304 revalidation of $API")
index=0
for bin in "$@"; do
  index=$((index + 1))
  template="$work/template-$index"
  mkdir -p "$template"
  seed_env=("${base_env[@]}" DATA_DIR="$template" DATABASE_URL="sqlite://$template/bench.db?mode=rwc")
  env -i "${seed_env[@]}" "$bin" migrate fresh --force >/dev/null
  printf 'correct horse battery staple\n' | env -i "${seed_env[@]}" "$bin" admin create-user --email bench@example.com >/dev/null
  printf 'correct horse battery staple\n' | env -i "${seed_env[@]}" "$bin" admin create-user --email admin@example.com --role admin >/dev/null
  env -i "${seed_env[@]}" "$bin" admin seed --users 100 >/dev/null
  start "$template" -- "$bin"
  user=$(login bench@example.com)
  admin=$(login admin@example.com)
  etag=$(curl -s -D - -o /dev/null -H 'apollo-require-preflight: true' \
    "http://$address/graphql?query=%7B%20apiInfo%20%7B%20version%20%7D%20%7D" | awk 'tolower($1)=="etag:" {print $2}' | tr -d '\r')
  stop
  rm -f "$template/server.log"

  line=0
  for spec in "POST||$API|RESPONSE_CACHE=false" "POST|$user|$ME|RESPONSE_CACHE=false" \
    "POST|$admin|$ALL|RESPONSE_CACHE=false" "POST|$user|$ME|RESPONSE_CACHE=true" "GET||$API|RESPONSE_CACHE=true|etag"; do
    IFS='|' read -r method token query setting use_etag <<<"$spec"
    tag=""
    [ -n "${use_etag:-}" ] && tag=$etag
    small=$(count "$bin" "$template" "$WARMUP" "$method" "$token" "$query" "$tag" "$setting")
    large=$(count "$bin" "$template" $((WARMUP + REQUESTS)) "$method" "$token" "$query" "$tag" "$setting")
    figures[$index,$line]=$(((large - small) / REQUESTS))
    line=$((line + 1))
  done
done

echo "$header"
echo "$rule"
for line in "${!lines[@]}"; do
  row="| ${lines[$line]} |"
  for index in $(seq 1 $#); do
    row+=" ${figures[$index,$line]} ($(python3 -c "print('%.2f' % ($stock / ${figures[$index,$line]}))")× stock) |"
  done
  if [ $# -gt 1 ]; then
    row+=" $(python3 -c "print('%.3f' % (${figures[$#,$line]} / ${figures[1,$line]}))") |"
  fi
  echo "$row"
done
