#!/usr/bin/env bash
# Side-by-side throughput and latency, in one run on one machine, as ratios to references
# started in the same run (docs/benchmarks.md):
#
#   - calibration (bench/calibration): bare axum answering fixed bytes, and stock
#     async-graphql-axum without middleware serving `{ users(limit: 20) { id name } }` from memory
#     — THE reference every ratio divides by (measured before, between and after the groups of
#     lines, and once in every round of a line: see `rounds`);
#   - multipult, release build, embedded backends, with every middleware on (limits high enough
#     never to refuse), with the response cache off and on, then with the middleware off;
#   - the same multipult lines against PostgreSQL + Redis when BENCH_DATABASE_URL and
#     BENCH_REDIS_URL are set (the database is emptied first: use a throwaway one), each line
#     in the same rounds as its embedded twin (both servers run; the one waiting is idle);
#   - the full-stack line with traces on (exported to a sink in the calibration server): every
#     trace, then 1 % of them — each alternating with the same line with traces off (the
#     default) on a second server, their ratio the median of the rounds' ratios;
#   - RSS idle and under load, and cold start to ready (migrated database).
#
#   bash bench/side-by-side.sh
#   DURATION=15s CONNECTIONS=64 bash bench/side-by-side.sh
#   REPEAT=3 DURATION=4s bash bench/side-by-side.sh   # three rounds per line, medians
#   BENCH_DATABASE_URL=postgres://multipult:multipult@127.0.0.1:5432/multipult \
#   BENCH_REDIS_URL=redis://127.0.0.1:6379 bash bench/side-by-side.sh
#   PGO=1 bash bench/side-by-side.sh   # both sides built profile-guided (bench/pgo.sh)
#
# Installs wrk from Debian's packages when missing. Every request goes to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
DURATION=${DURATION:-8s}
CONNECTIONS=${CONNECTIONS:-32}
REPEAT=${REPEAT:-1}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/multipult/target}"

need_wrk
if [ "${PGO:-0}" = 1 ]; then
  # Both sides profile-guided, each trained on its own lines (bench/pgo.sh).
  { read -r BIN; read -r CALIBRATION; } < <(bash bench/pgo.sh)
else
  echo "building (release)…" >&2
  cargo build --release --quiet --bin multipult
  cargo build --release --quiet --manifest-path bench/calibration/Cargo.toml
  BIN="$CARGO_TARGET_DIR/release/multipult"
  CALIBRATION="$CARGO_TARGET_DIR/release/calibration"
fi

bench_work side
: >"$work/steal"

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

# CPU time the hypervisor gave to others ("steal") and all CPU time so far, in ticks, from
# /proc/stat: on a virtual machine a busy host takes a share that moves every figure.
cpu_ticks() { awk '/^cpu / {t = 0; for (i = 2; i <= 9; i++) t += $i; print $9, t}' /proc/stat; }

# One wrk run; prints "rps p50_ms p99_ms non2xx". Args: url [script]. Each run's steal share
# goes to $work/steal (the summary gives their median and highest).
once() {
  local url=$1 script=${2:-} out before after
  before=$(cpu_ticks)
  if [ -n "$script" ]; then
    out=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$script" "$url")
  else
    out=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$url")
  fi
  after=$(cpu_ticks)
  echo "$before $after" | awk '$4 > $2 {printf "%.1f\n", 100 * ($3 - $1) / ($4 - $2)}' >>"$work/steal"
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
print("%.2f" % (float(rps.group(1)) if rps else 0.0), "%.2f" % ms("50%"), "%.2f" % ms("99%"), int(non.group(1)) if non else 0)
PY
}

# Of runs given one per argument ("rps p50 p99 non2xx"), the one with the median requests/s
# (its own latencies: a run's percentiles are not averaged with another's).
median_run() {
  python3 -c '
import sys
runs = sorted((a.split() for a in sys.argv[1:]), key=lambda r: float(r[0]))
print(" ".join(runs[(len(runs) - 1) // 2]))' "$@"
}

# The median of the ratios of neighbouring runs: args "a1 a2 …" "b1 b2 …" (requests/s) -> the
# median of a_i / b_i.
median_ratio() {
  python3 -c '
import sys
a, b = ([float(x) for x in arg.split()] for arg in sys.argv[1:3])
r = sorted(x / y for x, y in zip(a, b) if y)
print("%.4f" % r[(len(r) - 1) // 2] if r else "")' "$1" "$2"
}

# Runs wrk REPEAT times, back to back; prints the run with the median requests/s.
# Args: url [script]
measure() {
  local runs=()
  for _ in $(seq 1 "$REPEAT"); do runs+=("$(once "$@")"); done
  median_run "${runs[@]}"
}

# Rows: "backend|group|label|rps|p50|p99|non2xx|stock beside|bare beside|× stock|% of bare|scaled
# out / embedded". Each group of lines is bracketed by two measurements of the stock reference. A
# line measured with `line` (and the 304 line) is measured in rounds instead: each round runs the
# line embedded, the stock reference (the 304 line: bare axum too), then the line scaled out,
# seconds apart; its ratios are the medians of the rounds' ratios (so a slow or fast spell of
# this shared machine moves both sides of a ratio), its "stock beside" the reference's median.
# Other lines divide by the mean of their group's two reference measurements.
rows=()
refs=()
row() { # backend (e = embedded, s = scaled out, r = reference), group, label, "rps p50 p99 non2xx", [stock rps beside], [bare rps beside], [× stock], [fraction of bare], [scaled out / embedded]
  local backend=$1 group=$2 label=$3
  read -r rps p50 p99 non <<<"$4"
  rows+=("$backend|$group|$label|$rps|$p50|$p99|$non|${5:-}|${6:-}|${7:-}|${8:-}|${9:-}")
}
rps_of() { # runs ("rps p50 p99 non2xx" each) -> their requests/s, space-separated
  local run out=()
  for run in "$@"; do out+=("${run%% *}"); done
  echo "${out[*]}"
}
reference_again() { # label
  local out
  out=$(measure "http://127.0.0.1:$stock_port/graphql" "$work/stock.lua")
  refs+=("${out%% *}")
  row r "" "stock async-graphql-axum, users(limit: 20) ($1)" "$out"
}

echo "references…" >&2
bare=$(measure "http://127.0.0.1:$bare_port/")
row r "" "bare axum, fixed bytes" "$bare"
reference_again "first"

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

post_script() { # file, token ('' for none), query; $encoding: an Accept-Encoding to send
  local file=$1 token=$2 query=$3
  {
    echo 'wrk.method = "POST"'
    echo 'wrk.headers["Content-Type"] = "application/json"'
    [ -n "$token" ] && echo "wrk.headers[\"Authorization\"] = \"Bearer $token\""
    [ -n "${encoding:-}" ] && echo "wrk.headers[\"Accept-Encoding\"] = \"$encoding\""
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

# Backends: e (embedded) always, s (PostgreSQL + Redis) when both URLs are given. Both run at the
# same time with the same settings and every line is measured on one, then at once on the other,
# so "scaled out / embedded" compares measurements seconds apart, not minutes (the machine's
# speed drifts within a run). A server waiting for its turn uses no CPU.
backends=(e)
declare -A label_of addr pid cold idle load user_token admin_token mw_ratio
label_of[e]="multipult"
label_of[s]="multipult (PostgreSQL + Redis)"
if [ -n "${BENCH_DATABASE_URL:-}" ] && [ -n "${BENCH_REDIS_URL:-}" ]; then
  backends+=(s)
fi
backend_env_of() { # backend -> sets backend_env
  if [ "$1" = e ]; then
    backend_env=(DATABASE_URL="sqlite://$work/mp-e/bench.db?mode=rwc")
  else
    backend_env=(DATABASE_URL="$BENCH_DATABASE_URL" REDIS_URL="$BENCH_REDIS_URL" REDIS_KEY_PREFIX="bench-$$:")
  fi
}

seed() { # backend
  local data="$work/mp-$1"
  mkdir -p "$data"
  backend_env_of "$1"
  local seed_env=(PATH="$PATH" APP_ENV=test DATA_DIR="$data" JWT_SECRET=bench-secret-bench-secret-bench-secret-32
    SECRETS_KEY=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= LOG_LEVEL=warn "${backend_env[@]}")
  env -i "${seed_env[@]}" "$BIN" migrate fresh --force >/dev/null
  printf 'correct horse battery staple\n' | env -i "${seed_env[@]}" "$BIN" admin create-user --email bench@example.com >/dev/null
  printf 'correct horse battery staple\n' | env -i "${seed_env[@]}" "$BIN" admin create-user --email admin@example.com --role admin >/dev/null
  env -i "${seed_env[@]}" "$BIN" admin seed --users 100 >/dev/null
}

start_on() { # backend, env... : starts it, signs the two users in
  local b=$1
  shift
  backend_env_of "$b"
  start "$work/mp-$b" "$@"
  addr[$b]=$address
  pid[$b]=$server_pid
  until curl -sf "http://$address/health/ready" >/dev/null; do sleep 0.01; done
  user_token[$b]=$(login bench@example.com)
  admin_token[$b]=$(login admin@example.com)
}
stop_on() {
  kill "${pid[$1]}" 2>/dev/null || true
  wait "${pid[$1]}" 2>/dev/null || true
}

# Rounds of one line: in each, the line on every backend in turn with the stock reference right
# after the embedded run (and bare axum after it when `bare_too` is set), each once. The request
# script of backend b is "$work/line-$b.lua". Sets e_runs, s_runs, stock_runs, bare_runs.
rounds() {
  local b
  e_runs=() s_runs=() stock_runs=() bare_runs=()
  for _ in $(seq 1 "$REPEAT"); do
    for b in "${backends[@]}"; do
      if [ "$b" = e ]; then
        e_runs+=("$(once "http://${addr[e]}/graphql" "$work/line-e.lua")")
        stock_runs+=("$(once "http://127.0.0.1:$stock_port/graphql" "$work/stock.lua")")
        if [ -n "${bare_too:-}" ]; then
          bare_runs+=("$(once "http://127.0.0.1:$bare_port/")")
        fi
      else
        s_runs+=("$(once "http://${addr[s]}/graphql" "$work/line-s.lua")")
      fi
    done
  done
}

# The rows of a line measured in rounds. Args: group, label
rounds_rows() {
  local group=$1 label=$2 e_rps stock_rps bare_rps="" fraction=""
  e_rps=$(rps_of "${e_runs[@]}")
  stock_rps=$(rps_of "${stock_runs[@]}")
  if [ "${#bare_runs[@]}" -gt 0 ]; then
    bare_rps=$(rps_of "${bare_runs[@]}")
    fraction=$(median_ratio "$e_rps" "$bare_rps")
  fi
  row e "$group" "${label_of[e]} $label" "$(median_run "${e_runs[@]}")" \
    "$(median_run "${stock_runs[@]}" | cut -d' ' -f1)" \
    "$([ -n "$bare_rps" ] && median_run "${bare_runs[@]}" | cut -d' ' -f1)" \
    "$(median_ratio "$e_rps" "$stock_rps")" "$fraction" ""
  if [ "${#s_runs[@]}" -gt 0 ]; then
    local s_rps
    s_rps=$(rps_of "${s_runs[@]}")
    row s "$group" "${label_of[s]} $label" "$(median_run "${s_runs[@]}")" \
      "$(median_run "${stock_runs[@]}" | cut -d' ' -f1)" "" \
      "$(median_ratio "$s_rps" "$stock_rps")" "" "$(median_ratio "$s_rps" "$e_rps")"
  fi
}

# One line, in rounds. Args: group, label, who (anon|user|admin), query
line() {
  local group=$1 label=$2 who=$3 query=$4 b token
  for b in "${backends[@]}"; do
    case $who in
      anon) token="" ;;
      user) token=${user_token[$b]} ;;
      admin) token=${admin_token[$b]} ;;
    esac
    post_script "$work/line-$b.lua" "$token" "$query"
  done
  rounds
  rounds_rows "$group" "$label"
}

for b in "${backends[@]}"; do
  seed "$b"
  # Cold start to ready, on the migrated database.
  t0=$(date +%s%N)
  backend_env_of "$b"
  start "$work/mp-$b" RESPONSE_CACHE=false
  until curl -sf "http://$address/health/ready" >/dev/null; do sleep 0.01; done
  t1=$(date +%s%N)
  cold[$b]=$(((t1 - t0) / 1000000))
  # Idle: before anyone signs in (a sign-in's Argon2 check takes 19 MiB, which the allocator
  # keeps for the next one).
  sleep 1
  idle[$b]=$(rss_kb "$server_pid")
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
done

echo "response cache off…" >&2
for b in "${backends[@]}"; do start_on "$b" RESPONSE_CACHE=false; done
line 0 "anonymous { apiInfo { version } }, full stack, uncached" anon "{ apiInfo { version } }"
line 0 "bearer { apiInfo { version } }, uncached" user "{ apiInfo { version } }"
line 0 "bearer { me { id } }, uncached" user "{ me { id } }"
line 0 "bearer { me { id email roles { name } } }, uncached" user "{ me { id email roles { name } } }"
line 0 "admin { allUsers(limit: 20) { items { id email } } }, uncached" admin "{ allUsers(limit: 20) { items { id email } } }"
for b in "${backends[@]}"; do
  load[$b]=$(peak_rss_kb "${pid[$b]}")
  stop_on "$b"
done
reference_again "after the uncached lines"

echo "response cache on…" >&2
for b in "${backends[@]}"; do start_on "$b"; done
line 1 "anonymous { apiInfo { version } }, cached (public)" anon "{ apiInfo { version } }"
line 1 "bearer { me { id email roles { name } } }, cached" user "{ me { id email roles { name } } }"
line 1 "admin { allUsers(limit: 20) { items { id email } } }, cached" admin "{ allUsers(limit: 20) { items { id email } } }"
# What a browser sends with every request: the 1.5 KiB page compressed (brotli), the small
# answer not (under HTTP_COMPRESSION_MIN_SIZE).
encoding="gzip, deflate, br, zstd" line 1 "admin { allUsers(limit: 20) { items { id email } } }, cached, a browser's Accept-Encoding" admin "{ allUsers(limit: 20) { items { id email } } }"
encoding="gzip, deflate, br, zstd" line 1 "anonymous { apiInfo { version } }, cached, a browser's Accept-Encoding" anon "{ apiInfo { version } }"
for b in "${backends[@]}"; do
  etag=$(curl -s -D - -o /dev/null "http://${addr[$b]}/graphql?query=%7B%20apiInfo%20%7B%20version%20%7D%20%7D" |
    awk 'tolower($1)=="etag:" {print $2}' | tr -d '\r')
  revalidate_script "$work/line-$b.lua" "$etag"
done
bare_too=1 rounds
rounds_rows 1 "304 revalidation of a cached query"
for b in "${backends[@]}"; do stop_on "$b"; done
reference_again "after the cached lines"

# The full-stack anonymous line again beside the middleware off, alternately on one server each
# (same binary, same backends), so their ratio is of neighbouring measurements too.
echo "middleware off…" >&2
for b in "${backends[@]}"; do
  backend_env_of "$b"
  start "$work/mp-$b" RESPONSE_CACHE=false
  on_addr=$address
  on_pid=$server_pid
  start "$work/mp-$b-off" RESPONSE_CACHE=false RATE_LIMIT_ENABLED=false COST_BUDGET_USER=off \
    COST_BUDGET_ANONYMOUS=off CSRF_PREVENTION=false PERSISTED_QUERIES=off
  post_script "$work/anon.lua" "" "{ apiInfo { version } }"
  on_runs=() off_runs=()
  for _ in $(seq 1 "$REPEAT"); do
    on_runs+=("$(once "http://$on_addr/graphql" "$work/anon.lua")")
    off_runs+=("$(once "http://$address/graphql" "$work/anon.lua")")
  done
  row "$b" 2 "${label_of[$b]} anonymous { apiInfo { version } }, middleware off, uncached" \
    "$(median_run "${off_runs[@]}")"
  mw_ratio[$b]=$(python3 -c "print('%.2f' % float('$(median_ratio "$(rps_of "${on_runs[@]}")" "$(rps_of "${off_runs[@]}")")'))")
  stop
  kill "$on_pid" 2>/dev/null || true
  wait "$on_pid" 2>/dev/null || true
done

# Traces exported to the calibration server's sink: every trace, then 1 % of them (embedded),
# each alternating with the same line with traces off on a second server, so that their ratio is
# of neighbouring measurements too.
echo "traces on…" >&2
backend_env_of e
start "$work/mp-e" RESPONSE_CACHE=false
plain_addr=$address
plain_pid=$server_pid
declare -A traces_ratio
for sampled in 1 0.01; do
  start "$work/mp-e-traced" RESPONSE_CACHE=false \
    OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$bare_port" OTEL_TRACES_SAMPLER_ARG=$sampled
  traced_runs=() plain_runs=()
  for _ in $(seq 1 "$REPEAT"); do
    traced_runs+=("$(once "http://$address/graphql" "$work/anon.lua")")
    plain_runs+=("$(once "http://$plain_addr/graphql" "$work/anon.lua")")
  done
  case $sampled in
    1) what="every trace" ;;
    *) what="1 % sampled" ;;
  esac
  row e 2 "multipult anonymous { apiInfo { version } }, full stack, traces on ($what)" \
    "$(median_run "${traced_runs[@]}")"
  traces_ratio[$what]=$(python3 -c "print('%.2f' % float('$(median_ratio "$(rps_of "${traced_runs[@]}")" "$(rps_of "${plain_runs[@]}")")'))")
  stop
done
kill "$plain_pid" 2>/dev/null || true
wait "$plain_pid" 2>/dev/null || true
reference_again "last"

read -r bare_rps _ <<<"$bare"
echo
build="release build"
[ "${PGO:-0}" = 1 ] && build="profile-guided release builds (bench/pgo.sh)"
echo "multipult side by side: $(nproc) cores, wrk -t2 -c$CONNECTIONS -d$DURATION, median of $REPEAT run(s) per line, $build, $(date -u +%Y-%m-%d)"
echo "reference: stock async-graphql-axum, measured before, between and after the groups of lines:" \
  "$(printf '%s ' "${refs[@]}")req/s; the lines measured in rounds (each round: embedded, stock reference, scaled out) give the" \
  "medians of their rounds' ratios (× stock, scaled out / embedded; the 304 line's % of bare axum, bare axum in each round too) and" \
  "the reference's median (\"stock beside\"); the other lines divide by the two reference measurements around their group"
echo
echo "| line | req/s | p50 ms | p99 ms | non-2xx | × stock | % of bare axum | scaled out / embedded | stock beside |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}" | python3 -c '
import sys
bare, refs = float(sys.argv[1]), [float(r) for r in sys.argv[2:]]
rows = [l.rstrip("\n").split("|") for l in sys.stdin if l.strip()]
embedded = {}
for backend, group, label, rps, *_ in rows:
    if backend == "e":
        embedded[label.replace("multipult ", "", 1)] = float(rps)
order = [r for r in rows if r[0] == "r"] + [r for r in rows if r[0] == "e"] + [r for r in rows if r[0] == "s"]
for backend, group, label, rps, p50, p99, non, stock, bare_now, x_stock, of_bare, scaled in order:
    rps = float(rps)
    if stock:
        ref = float(stock)
    elif group == "":
        ref = sum(refs) / len(refs)
    else:
        g = int(group)
        ref = (refs[g] + refs[g + 1]) / 2
    base_bare = float(bare_now) if bare_now else bare
    pair = ""
    if scaled:
        pair = f"{100 * float(scaled):.0f} %"
    elif backend == "s":
        base = embedded.get(label.replace("multipult (PostgreSQL + Redis) ", "", 1))
        if base:
            pair = f"{100 * rps / base:.0f} %"
    beside = f"{float(stock):,.0f}" if stock else ""
    if bare_now:
        beside += f" (bare axum {float(bare_now):,.0f})"
    times = float(x_stock) if x_stock else rps / ref
    bare_share = 100 * float(of_bare) if of_bare else 100 * rps / base_bare
    print(f"| {label} | {rps:,.0f} | {p50} | {p99} | {non} | {times:.2f} | {bare_share:.0f} % | {pair} | {beside} |")
' "$bare_rps" "${refs[@]}"
echo
for b in "${backends[@]}"; do
  echo "- ${label_of[$b]}: cold start to ready ${cold[$b]} ms; RSS idle $((idle[$b] / 1024)) MB, peak (the uncached lines) $((load[$b] / 1024)) MB; full stack / middleware off = ${mw_ratio[$b]} (neighbouring measurements)"
done
echo "- traces on / off (embedded, neighbouring measurements): every trace = ${traces_ratio[every trace]}, 1 % sampled = ${traces_ratio[1 % sampled]}"
python3 - "$work/steal" <<'PY'
import sys
shares = sorted(float(line) for line in open(sys.argv[1]) if line.strip())
if shares:
    print("- host steal (CPU time the hypervisor took, /proc/stat) during the wrk runs: median %.1f %%, highest %.1f %%;"
          " with much of it the absolute figures move, the ratios of neighbouring runs less" % (shares[(len(shares) - 1) // 2], shares[-1]))
PY
