#!/usr/bin/env bash
# Side-by-side MySQL data-path benchmark: MariaDB direct vs through
# gatehouse (secret masking on, a policy that classifies every statement)
# vs through HAProxy in TCP mode (a relay that only copies bytes: the
# reference for what one more hop costs on this machine, as PgBouncer is on
# the PostgreSQL side), with Debian's sysbench: oltp_point_select and
# oltp_read_only, prepared statements (sysbench's default), at 32 and 1
# threads.
#
#   loadtest/mysql-compare.sh                 # defaults: 3 rounds x 10 s
#   loadtest/mysql-compare.sh -T 5 -r 2 -c 32
#
# Everything talks to 127.0.0.1 only, without TLS. Rounds are interleaved
# (direct, gatehouse, relay; then again) so drift hits all alike. For each
# run the script records queries per second, mean time per query (threads ÷
# rate) and the proxy's CPU time (utime+stime from /proc/<pid>/stat, all
# threads) per query. Output: a markdown table of medians on stdout and under
# loadtest/results/ (with the raw runs as JSON lines).
#
# Options (flag or environment variable):
#   -T secs     DURATION   seconds per sysbench run                   (10)
#   -r n        ROUNDS     rounds                                     (3)
#   -c list     CLIENTS    space/comma list of thread counts          ("32 1")
#   -w list     TESTS      sysbench tests        ("oltp_point_select oltp_read_only")
#   -l label    LABEL      tag for the results file name              (none)
#   GH_WORKERS   gatehouse workers (default: number of cores)
#   GH_SCAN      on | off: secret masking (on)
#   GH_POLICY    on | off: statement policy (on: reads allowed, writes held)
#   GH_BIN       gatehouse binary (default target/release/gatehouse, built if needed)
#   GH_SKIP_BUILD 1 = do not run cargo build
#   GH_PORT      gatehouse's MySQL listener (3317); MY_PORT MariaDB (3306)
#   RELAY        on | off: the HAProxy reference (on when haproxy is installed)
#   RELAY_PORT   its listener (3318); it runs as many threads as gatehouse workers
#   BENCH_DB     database (gh_sysbench); TABLES (4), TABLE_SIZE (10000)
#   KEEP_TMP     1 = keep the temp dir (configuration, log)

set -euo pipefail

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-"32 1"}
TESTS=${TESTS:-"oltp_point_select oltp_read_only"}
LABEL=${LABEL:-}
GH_PORT=${GH_PORT:-3317}
MY_PORT=${MY_PORT:-3306}
BENCH_DB=${BENCH_DB:-gh_sysbench}
TABLES=${TABLES:-4}
TABLE_SIZE=${TABLE_SIZE:-10000}
GH_WORKERS=${GH_WORKERS:-$(nproc)}
GH_SCAN=${GH_SCAN:-on}
GH_POLICY=${GH_POLICY:-on}
RELAY_PORT=${RELAY_PORT:-3318}
if [ -z "${RELAY:-}" ]; then
  RELAY=off
  command -v haproxy >/dev/null && RELAY=on
fi

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
while getopts "T:r:c:w:l:h" o; do
  case $o in
    T) DURATION=$OPTARG ;;
    r) ROUNDS=$OPTARG ;;
    c) CLIENTS=$OPTARG ;;
    w) TESTS=$OPTARG ;;
    l) LABEL=$OPTARG ;;
    h) usage 0 ;;
    *) usage 2 ;;
  esac
done
CLIENTS=${CLIENTS//,/ }
TESTS=${TESTS//,/ }
[ "$DURATION" -ge 1 ] && [ "$DURATION" -le 600 ] || { echo "duration must be 1..600 s" >&2; exit 2; }
[ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 20 ] || { echo "rounds must be 1..20" >&2; exit 2; }

cd "$(dirname "$0")/.."
command -v sysbench >/dev/null || { echo "sysbench is not installed (apt-get install sysbench)" >&2; exit 1; }
GH_BIN=${GH_BIN:-$PWD/target/release/gatehouse}
if [ "${GH_SKIP_BUILD:-0}" != 1 ] && [ "$GH_BIN" = "$PWD/target/release/gatehouse" ]; then
  cargo build --release --locked -p gatehouse >&2
fi

TMP=$(mktemp -d)
GH_PID=""
RELAY_PID=""
cleanup() {
  [ -n "$GH_PID" ] && kill "$GH_PID" 2>/dev/null && wait "$GH_PID" 2>/dev/null || true
  [ -n "$RELAY_PID" ] && kill "$RELAY_PID" 2>/dev/null || true
  [ "${KEEP_TMP:-0}" = 1 ] && echo "kept $TMP" >&2 || rm -rf "$TMP"
}
trap cleanup EXIT

root() { mariadb --protocol=tcp -h 127.0.0.1 -P "$MY_PORT" -u root "$@"; }
root -e "CREATE DATABASE IF NOT EXISTS $BENCH_DB"
common=(--db-driver=mysql --mysql-db="$BENCH_DB" --tables="$TABLES" --table-size="$TABLE_SIZE" --mysql-ssl=off)
if ! root "$BENCH_DB" -e "SELECT COUNT(*) FROM sbtest$TABLES" >/dev/null 2>&1; then
  echo "preparing $TABLES tables of $TABLE_SIZE rows in $BENCH_DB" >&2
  sysbench oltp_read_only "${common[@]}" --mysql-host=127.0.0.1 --mysql-port="$MY_PORT" --mysql-user=root prepare >/dev/null
fi

TOKEN="bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
HASH="sha256:$(printf %s "$TOKEN" | sha256sum | cut -d" " -f1)"
policy=""
if [ "$GH_POLICY" = on ]; then
  policy='[policy]
default_role = "bench"
[policy.roles.bench]
read = "allow"
write = "approve"
delete = "deny"
ddl = "deny"
admin = "deny"
unknown = "deny"
approvers = ["approver"]'
fi
scan=true
[ "$GH_SCAN" = off ] && scan=false
cat > "$TMP/gatehouse.toml" <<EOF
[server]
listen = [{ address = "127.0.0.1:$GH_PORT", protocol = "mysql" }]
workers = $GH_WORKERS
allow_cleartext_on_loopback = true
max_connections = 1000

[log]
level = "warn"

[scan]
enabled = $scan

[[target]]
name = "$BENCH_DB"
protocol = "mysql"
database = "$BENCH_DB"
host = "127.0.0.1"
port = $MY_PORT
user = "root"
tls = "disable"

[[identity]]
name = "bench"
token_hash = "$HASH"
targets = ["*"]

$policy
EOF
"$GH_BIN" serve --config "$TMP/gatehouse.toml" 2>"$TMP/gatehouse.log" &
GH_PID=$!
for _ in $(seq 1 200); do
  (exec 3<>"/dev/tcp/127.0.0.1/$GH_PORT") 2>/dev/null && break
  kill -0 "$GH_PID" 2>/dev/null || { cat "$TMP/gatehouse.log" >&2; exit 1; }
  sleep 0.05
done

TARGETS="direct gatehouse"
if [ "$RELAY" = on ]; then
  cat > "$TMP/haproxy.cfg" <<EOF
global
    nbthread $GH_WORKERS
    maxconn 2000
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
listen mysql
    bind 127.0.0.1:$RELAY_PORT
    server db 127.0.0.1:$MY_PORT
EOF
  haproxy -f "$TMP/haproxy.cfg" -D -p "$TMP/haproxy.pid"
  RELAY_PID=$(cat "$TMP/haproxy.pid")
  TARGETS="direct gatehouse relay"
fi

# utime+stime of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p loadtest/results
RAW=loadtest/results/mysql-compare-$STAMP${LABEL:+-$LABEL}.jsonl
: > "$RAW"

run_one() { # target test clients round
  local target=$1 test=$2 clients=$3 round=$4 port user pw
  local pid=""
  case $target in
    direct) port=$MY_PORT; user=root; pw="" ;;
    gatehouse) port=$GH_PORT; user=bench; pw=$TOKEN; pid=$GH_PID ;;
    relay) port=$RELAY_PORT; user=root; pw=""; pid=$RELAY_PID ;;
  esac
  local before after out
  [ -n "$pid" ] && before=$(cpu_ticks "$pid")
  out=$(sysbench "$test" "${common[@]}" --mysql-host=127.0.0.1 --mysql-port="$port" \
    --mysql-user="$user" --mysql-password="$pw" --threads="$clients" --time="$DURATION" \
    --report-interval=0 --histogram=off run 2>&1) || { echo "$out" >&2; exit 1; }
  [ -n "$pid" ] && after=$(cpu_ticks "$pid")
  local qps tps lat_ms errors
  qps=$(sed -n 's/.*queries: *[0-9]* *(\([0-9.]*\) per sec.).*/\1/p' <<<"$out")
  tps=$(sed -n 's/.*transactions: *[0-9]* *(\([0-9.]*\) per sec.).*/\1/p' <<<"$out")
  lat_ms=$(sed -n 's/^ *avg: *\([0-9.]*\)$/\1/p' <<<"$out" | head -1)
  errors=$(sed -n 's/.*ignored errors: *\([0-9]*\).*/\1/p' <<<"$out")
  local cpu_us_q=null
  if [ -n "$pid" ]; then
    cpu_us_q=$(awk -v a="$after" -v b="$before" -v t="$TICK" -v q="$qps" -v d="$DURATION" \
      'BEGIN { printf "%.2f", (a - b) / t * 1e6 / (q * d) }')
  fi
  # Mean time per query from the rate (Little's law: each thread has one
  # query in flight); sysbench prints its latency in whole 10 µs steps.
  local lat_q_us
  lat_q_us=$(awk -v c="$clients" -v q="$qps" 'BEGIN { printf "%.1f", c * 1e6 / q }')
  printf '{"target":"%s","test":"%s","clients":%s,"round":%s,"qps":%s,"tps":%s,"latency_ms":%s,"latency_per_query_us":%s,"errors":%s,"proxy_cpu_us_per_query":%s}\n' \
    "$target" "$test" "$clients" "$round" "$qps" "$tps" "$lat_ms" "$lat_q_us" "${errors:-0}" "$cpu_us_q" >> "$RAW"
  echo "  $target $test c=$clients round $round: $qps q/s, $lat_q_us us/query, proxy cpu $cpu_us_q us/query" >&2
}

for test in $TESTS; do
  for c in $CLIENTS; do
    for r in $(seq 1 "$ROUNDS"); do
      for target in $TARGETS; do
        run_one "$target" "$test" "$c" "$r"
      done
    done
  done
done

SUMMARY=loadtest/results/mysql-compare-$STAMP${LABEL:+-$LABEL}.md
python3 - "$RAW" > "$SUMMARY" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
keys = sorted({(r["test"], r["clients"]) for r in runs}, key=lambda k: (k[0], -k[1]))
relay = any(r["target"] == "relay" for r in runs)
head = "| test | threads | direct q/s | gatehouse q/s | ratio | direct µs/query | gatehouse µs/query | added µs/query | gatehouse CPU µs/query |"
rule = "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
if relay:
    head += " relay q/s | relay ratio | relay added µs/query | relay CPU µs/query | gatehouse ÷ relay |"
    rule += "---:|---:|---:|---:|---:|"
print(head + " errors |")
print(rule + "---:|")
for test, c in keys:
    of = lambda t: [r for r in runs if r["test"] == test and r["clients"] == c and r["target"] == t]
    d, g, h = of("direct"), of("gatehouse"), of("relay")
    med = lambda rs, k: statistics.median(r[k] for r in rs)
    dq, gq = med(d, "qps"), med(g, "qps")
    dl, gl = med(d, "latency_per_query_us"), med(g, "latency_per_query_us")
    errors = sum(r["errors"] for r in d + g + h)
    line = f"| {test} | {c} | {dq:,.0f} | {gq:,.0f} | {gq / dq:.2f} | {dl:.1f} | {gl:.1f} | {gl - dl:+.1f} | {med(g, 'proxy_cpu_us_per_query'):.1f} |"
    if relay:
        hq, hl = med(h, "qps"), med(h, "latency_per_query_us")
        line += f" {hq:,.0f} | {hq / dq:.2f} | {hl - dl:+.1f} | {med(h, 'proxy_cpu_us_per_query'):.1f} | {gq / hq:.2f} |"
    print(line + f" {errors} |")
print()
print(f"medians of {len(d)} interleaved rounds; raw runs: {sys.argv[1]}")
PY
cat "$SUMMARY"
