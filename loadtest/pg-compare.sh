#!/usr/bin/env bash
# Side-by-side data-path benchmark: PostgreSQL direct vs gatehouse vs PgBouncer
# (session mode), pgbench select-only with prepared statements.
#
#   loadtest/pg-compare.sh                      # defaults: 3 rounds x 10 s, scale 10
#   loadtest/pg-compare.sh -T 5 -r 2 -t direct,gatehouse
#   GH_IO_DRIVER=epoll GH_WORKERS=1 LABEL=epoll-w1 loadtest/pg-compare.sh -t direct,gatehouse
#   GH_VARIANTS="2:io_uring 1:io_uring 2:epoll 1:epoll" loadtest/pg-compare.sh -t gatehouse,pgbouncer
#
# Everything talks to 127.0.0.1 only, with sslmode=disable. Rounds are
# interleaved (direct, gatehouse, pgbouncer; then again) so drift hits all
# targets alike. For each run the script records TPS, mean latency and the
# proxy process's CPU time (utime+stime from /proc/<pid>/stat, summed over its
# threads) per transaction. Output: a markdown table of medians on stdout and
# under loadtest/results/ (with the raw runs as JSON lines).
#
# Options (flag or environment variable):
#   -T secs     DURATION      seconds per pgbench run              (10)
#   -r n        ROUNDS        rounds                                (3)
#   -s n        SCALE         pgbench scale when creating gh_bench  (10)
#   -t list     TARGETS       comma list of direct,gatehouse,pgbouncer (all)
#   -c list     CLIENTS       space/comma list of client counts     ("32 1")
#   -l label    LABEL         tag for the results file name         (none)
#   GH_WORKERS     gatehouse workers (default: number of cores)
#   GH_IO_DRIVER   gatehouse io_driver: auto | io_uring | epoll (default auto)
#   GH_SCAN        secret scanning: default (gatehouse's own default, on) | on | off
#   GH_VARIANTS    several gatehouse configurations compared in the same
#                  interleaved rounds: space-separated WORKERS:IO_DRIVER[:scan|:noscan][:policy][:rec-MODE][:BINARY]
#                  (:policy adds a statement policy that allows reads and holds writes;
#                  :rec-summary, :rec-full, :rec-none record sessions into a temp dir),
#                  e.g. "2:io_uring 1:io_uring 2:epoll 1:epoll", "2:auto 2:auto:noscan",
#                  or A/B of two builds: "2:auto 2:auto:/tmp/gatehouse-new"; each
#                  runs as its own process (the first on GH_PORT, the others on
#                  free ports from 6440 up) and shows up as target
#                  gatehouse-w<N>-<driver>[-noscan][-<binary name>].
#                  Overrides GH_WORKERS/GH_IO_DRIVER/GH_SCAN.
#   GH_POOL_SIZE   pool_size of each gatehouse variant (8)
#   GH_BIN         gatehouse binary to use (default: target/release/gatehouse, built if needed)
#   GH_SKIP_BUILD  1 = do not run cargo build
#   GH_PORT, PGB_PORT  listen ports (6433, 6434); PG_PORT upstream port (5432)
#   BENCH_DB       database name (gh_bench)
#   KEEP_TMP       1 = keep the temp dir (configs, logs)
#   PROFILE_HOOK   shell command run in the background during each proxy run
#                  (gatehouse, pgbouncer), with TARGET, PROXY_PID, CLIENTS, ROUND
#                  and DURATION exported; the run waits for it. E.g.
#                  PROFILE_HOOK='perf stat -p $PROXY_PID -o /tmp/$TARGET-c$CLIENTS.txt -- sleep $((DURATION-2))'

set -euo pipefail

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
SCALE=${SCALE:-10}
TARGETS=${TARGETS:-direct,gatehouse,pgbouncer}
CLIENTS=${CLIENTS:-"32 1"}
LABEL=${LABEL:-}
GH_PORT=${GH_PORT:-6433}
PGB_PORT=${PGB_PORT:-6434}
PG_HOST=127.0.0.1
PG_PORT=${PG_PORT:-5432}
BENCH_DB=${BENCH_DB:-gh_bench}
NCPU=$(nproc)
GH_WORKERS=${GH_WORKERS:-$NCPU}
GH_IO_DRIVER=${GH_IO_DRIVER:-auto}
GH_VARIANTS=${GH_VARIANTS:-}
GH_SCAN=${GH_SCAN:-default}
PROFILE_HOOK=${PROFILE_HOOK:-}

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
while getopts "T:r:s:t:c:l:h" o; do
  case $o in
    T) DURATION=$OPTARG ;;
    r) ROUNDS=$OPTARG ;;
    s) SCALE=$OPTARG ;;
    t) TARGETS=$OPTARG ;;
    c) CLIENTS=$OPTARG ;;
    l) LABEL=$OPTARG ;;
    h) usage 0 ;;
    *) usage 2 ;;
  esac
done
CLIENTS=${CLIENTS//,/ }
IFS=',' read -r -a TARGET_LIST <<<"$TARGETS"
for t in "${TARGET_LIST[@]}"; do
  case $t in direct | gatehouse | pgbouncer) ;; *) echo "unknown target: $t" >&2; exit 2 ;; esac
done
want() { [[ ",$TARGETS," == *",$1,"* ]]; }

# Gatehouse instances: name, workers, driver, port (pid filled in at start).
GH_NAMES=() GH_WS=() GH_DS=() GH_SCANS=() GH_PORTS=() GH_PIDS=() GH_BINS=() GH_POLS=() GH_RECS=()
if want gatehouse; then
  if [[ -z $GH_VARIANTS ]]; then
    case $GH_SCAN in default | on | off) ;; *) echo "GH_SCAN must be default, on or off" >&2; exit 2 ;; esac
    GH_NAMES=(gatehouse) GH_WS=("$GH_WORKERS") GH_DS=("$GH_IO_DRIVER") GH_SCANS=("$GH_SCAN") GH_PORTS=("$GH_PORT") GH_BINS=("") GH_POLS=("") GH_RECS=("")
  else
    i=0
    for v in $GH_VARIANTS; do
      [[ $v =~ ^([0-9]+):(auto|io_uring|epoll)(:(scan|noscan))?(:(policy))?(:rec-(none|summary|full))?(:(.+))?$ ]] \
        || { echo "bad GH_VARIANTS entry: $v (want WORKERS:auto|io_uring|epoll[:scan|:noscan][:policy][:rec-MODE][:BINARY])" >&2; exit 2; }
      sc=default
      [[ ${BASH_REMATCH[4]} == scan ]] && sc=on
      [[ ${BASH_REMATCH[4]} == noscan ]] && sc=off
      GH_NAMES+=("gatehouse-w${BASH_REMATCH[1]}-${BASH_REMATCH[2]}${BASH_REMATCH[4]:+-${BASH_REMATCH[4]}}${BASH_REMATCH[6]:+-policy}${BASH_REMATCH[8]:+-rec-${BASH_REMATCH[8]}}${BASH_REMATCH[10]:+-$(basename "${BASH_REMATCH[10]}")}")
      GH_WS+=("${BASH_REMATCH[1]}") GH_DS+=("${BASH_REMATCH[2]}") GH_SCANS+=("$sc") GH_BINS+=("${BASH_REMATCH[10]}") GH_POLS+=("${BASH_REMATCH[6]}") GH_RECS+=("${BASH_REMATCH[8]}")
      GH_PORTS+=($((i == 0 ? GH_PORT : 0))) # 0: a free port, chosen at start
      i=$((i + 1))
    done
  fi
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RESULTS=$ROOT/loadtest/results
mkdir -p "$RESULTS"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
NAME=pg-compare-$STAMP${LABEL:+-$LABEL}
JSONL=$RESULTS/$NAME.jsonl
TABLE=$RESULTS/$NAME.md
CLK_TCK=$(getconf CLK_TCK)
TOKEN=bench-token-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')

export PGSSLMODE=disable PGCONNECT_TIMEOUT=5
unset PGHOST PGPORT PGDATABASE PGUSER PGPASSWORD PGSERVICE

log() { printf '[pg-compare] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

TMP=$(mktemp -d /tmp/pg-compare.XXXXXX)
chmod 755 "$TMP"
PGB_PID=
HOOK_PID=
stop_pid() { # pid signal
  kill -0 "$1" 2>/dev/null || return 0
  kill "-$2" "$1" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
}
cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  [[ -n $HOOK_PID ]] && kill "$HOOK_PID" 2>/dev/null && wait "$HOOK_PID" 2>/dev/null
  for p in "${GH_PIDS[@]}"; do stop_pid "$p" TERM; done
  [[ -n $PGB_PID ]] && stop_pid "$PGB_PID" INT # SIGINT: pgbouncer's immediate shutdown
  wait 2>/dev/null || true
  if [[ ${KEEP_TMP:-0} == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! ss -Hltn "sport = :$1" | grep -q .; }
wait_port() { # port pid name
  for _ in $(seq 100); do
    kill -0 "$2" 2>/dev/null || die "$3 exited at startup; see $TMP"
    port_free "$1" || return 0
    sleep 0.1
  done
  die "$3 is not listening on 127.0.0.1:$1"
}

# --- (a) build -------------------------------------------------------------
if want gatehouse; then
  GH_BIN=${GH_BIN:-$ROOT/target/release/gatehouse}
  if [[ ${GH_SKIP_BUILD:-0} != 1 && $GH_BIN == "$ROOT/target/release/gatehouse" ]]; then
    log "cargo build --release (no-op when fresh)"
    (cd "$ROOT" && cargo build --release --quiet --bin gatehouse) || die "build failed"
  fi
  [[ -x $GH_BIN ]] || die "no gatehouse binary at $GH_BIN"
fi
command -v pgbench >/dev/null || die "pgbench not found"

# --- (b) the pgbench database -------------------------------------------------
psql_pg() { psql -X -q -At -h $PG_HOST -p "$PG_PORT" -U postgres "$@"; }
has_db=$(psql_pg -d postgres -c "select 1 from pg_database where datname = '$BENCH_DB'") || die "PostgreSQL unreachable on $PG_HOST:$PG_PORT"
if [[ $has_db == 1 ]] && [[ $(psql_pg -d "$BENCH_DB" -c "select to_regclass('pgbench_accounts') is not null and to_regclass('pgbench_branches') is not null") == t ]]; then
  have_scale=$(psql_pg -d "$BENCH_DB" -c "select count(*) from pgbench_branches")
  [[ $have_scale == "$SCALE" ]] || log "note: $BENCH_DB exists with scale $have_scale (asked $SCALE); using it as is"
  SCALE=$have_scale
else
  log "creating $BENCH_DB at scale $SCALE"
  [[ $has_db == 1 ]] || psql_pg -d postgres -c "create database $BENCH_DB"
  pgbench -i -q -s "$SCALE" -h $PG_HOST -p "$PG_PORT" -U postgres "$BENCH_DB" >"$TMP/pgbench-init.log" 2>&1 \
    || { cat "$TMP/pgbench-init.log" >&2; die "pgbench -i failed"; }
fi

# --- (c) gatehouse and PgBouncer -------------------------------------------------
next_port=6440
for i in "${!GH_NAMES[@]}"; do
  name=${GH_NAMES[$i]} port=${GH_PORTS[$i]}
  if [[ $port == 0 ]]; then
    while ! port_free "$next_port" || [[ $next_port == "$PGB_PORT" ]]; do next_port=$((next_port + 1)); done
    port=$next_port GH_PORTS[$i]=$next_port next_port=$((next_port + 1))
  fi
  port_free "$port" || die "127.0.0.1:$port is in use"
  cat >"$TMP/$name.toml" <<EOF
[server]
listen = ["127.0.0.1:$port"]
workers = ${GH_WS[$i]}
io_driver = "${GH_DS[$i]}"
max_connections = 1000
allow_cleartext_on_loopback = true
shutdown_timeout_secs = 2

[log]
level = "info"

[[target]]
name = "$BENCH_DB"
database = "$BENCH_DB"
host = "$PG_HOST"
port = $PG_PORT
user = "postgres"
tls = "disable"
# Kept idle connections: several variants and PgBouncer share
# PostgreSQL's max_connections.
pool_size = ${GH_POOL_SIZE:-8}

[[identity]]
name = "bench"
token_hash = "$(printf '%s' "$TOKEN" | "$GH_BIN" token hash)"
targets = ["$BENCH_DB"]
EOF
  case ${GH_SCANS[$i]} in
    on) printf '\n[scan]\nenabled = true\n' >>"$TMP/$name.toml" ;;
    off) printf '\n[scan]\nenabled = false\n' >>"$TMP/$name.toml" ;;
  esac
  if [[ -n ${GH_POLS[$i]:-} ]]; then
    printf '\n[policy]\ndefault_role = "bench"\n[policy.roles.bench]\nread = "allow"\nwrite = "approve"\napprovers = ["approver"]\n' >>"$TMP/$name.toml"
  fi
  if [[ -n ${GH_RECS[$i]:-} ]]; then
    printf '\n[recording]\ndir = "%s"\nresults = "%s"\nretention_days = 1\n' "$TMP/$name-rec" "${GH_RECS[$i]}" >>"$TMP/$name.toml"
  fi
  bin=${GH_BINS[$i]:-$GH_BIN}
  [[ -x $bin ]] || die "no gatehouse binary at $bin"
  "$bin" serve --config "$TMP/$name.toml" >"$TMP/$name.log" 2>&1 &
  GH_PIDS+=($!)
  wait_port "$port" "${GH_PIDS[$i]}" "$name"
  log "$name pid ${GH_PIDS[$i]} on 127.0.0.1:$port (workers=${GH_WS[$i]} io_driver=${GH_DS[$i]} scan=${GH_SCANS[$i]}): $(grep -o 'driver=[A-Za-z]*' "$TMP/$name.log" | head -1)"
done

if want pgbouncer; then
  PGBOUNCER=${PGBOUNCER:-/usr/sbin/pgbouncer}
  [[ -x $PGBOUNCER ]] || die "no pgbouncer at $PGBOUNCER"
  port_free "$PGB_PORT" || die "127.0.0.1:$PGB_PORT is in use"
  mkdir -p "$TMP/pgb"
  printf '"postgres" ""\n' >"$TMP/pgb/userlist.txt"
  cat >"$TMP/pgb/pgbouncer.ini" <<EOF
[databases]
$BENCH_DB = host=$PG_HOST port=$PG_PORT dbname=$BENCH_DB user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = trust
auth_file = $TMP/pgb/userlist.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 64
max_db_connections = 0
server_tls_sslmode = disable
client_tls_sslmode = disable
logfile = $TMP/pgb/pgbouncer.log
pidfile = $TMP/pgb/pgbouncer.pid
log_connections = 0
log_disconnections = 0
EOF
  if [[ $(id -u) == 0 ]]; then
    chown -R postgres: "$TMP/pgb"
    # setpriv execs in place, so $! is pgbouncer itself (its CPU is what we read).
    setpriv --reuid=postgres --regid=postgres --init-groups "$PGBOUNCER" "$TMP/pgb/pgbouncer.ini" >"$TMP/pgb/stdout.log" 2>&1 &
  else
    "$PGBOUNCER" "$TMP/pgb/pgbouncer.ini" >"$TMP/pgb/stdout.log" 2>&1 &
  fi
  PGB_PID=$!
  wait_port "$PGB_PORT" "$PGB_PID" pgbouncer
  log "pgbouncer pid $PGB_PID on 127.0.0.1:$PGB_PORT (session mode)"
fi

# --- (d) the runs -------------------------------------------------------------------
# CPU ticks (utime+stime, all threads) of a pid; fields after the ")" of comm.
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }

run_one() { # target clients round [gatehouse index]
  local target=$1 c=$2 round=$3 gi=${4:-} port pid user j workers=null driver=null scan=null
  case $target in
    direct) port=$PG_PORT pid= user=postgres ;;
    pgbouncer) port=$PGB_PORT pid=$PGB_PID user=postgres ;;
    *) port=${GH_PORTS[$gi]} pid=${GH_PIDS[$gi]} user=bench workers=${GH_WS[$gi]} driver="\"${GH_DS[$gi]}\"" scan="\"${GH_SCANS[$gi]}\"" ;;
  esac
  j=$((c < 2 ? 1 : 2))
  local out=$TMP/run-$target-c$c-r$round.log t0=0 t1=0
  [[ -n $pid ]] && t0=$(cpu_ticks "$pid")
  if [[ -n $pid && -n $PROFILE_HOOK ]]; then
    TARGET=$target PROXY_PID=$pid CLIENTS=$c ROUND=$round DURATION=$DURATION bash -c "$PROFILE_HOOK" &
    HOOK_PID=$!
  fi
  PGPASSWORD=$([[ $user == bench ]] && echo "$TOKEN" || true) \
    pgbench -n -S -M prepared -c "$c" -j "$j" -T "$DURATION" -h $PG_HOST -p "$port" -U "$user" "$BENCH_DB" >"$out" 2>&1 \
    || { cat "$out" >&2; die "pgbench against $target failed"; }
  [[ -n $pid ]] && t1=$(cpu_ticks "$pid")
  if [[ -n $HOOK_PID ]]; then wait "$HOOK_PID" 2>/dev/null || true; HOOK_PID=; fi
  local tps lat tx failed cpu_us
  tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p' "$out")
  lat=$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$out")
  tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out")
  [[ -n $tps && -n $lat && -n $tx ]] || { cat "$out" >&2; die "cannot parse pgbench output"; }
  if [[ -n $pid ]]; then
    cpu_us=$(((t1 - t0) * 1000000 / CLK_TCK))
    cpu_json=$cpu_us
  else
    cpu_json=null
  fi
  printf '{"stamp":"%s","label":"%s","target":"%s","clients":%d,"threads":%d,"round":%d,"duration_s":%d,"scale":%d,"tps":%s,"latency_ms":%s,"transactions":%d,"failed":%d,"proxy_cpu_us":%s,"gh_workers":%s,"gh_io_driver":%s,"gh_scan":%s,"cores":%d}\n' \
    "$STAMP" "$LABEL" "$target" "$c" "$j" "$round" "$DURATION" "$SCALE" "$tps" "$lat" "$tx" "${failed:-0}" "$cpu_json" \
    "$workers" "$driver" "$scan" "$NCPU" >>"$JSONL"
  log "round $round  $(printf '%-21s' "$target") c=$(printf '%-2s' "$c") tps=$tps lat=${lat}ms tx=$tx$([[ -n $pid ]] && printf ' cpu=%sus/tx' "$(awk -v a="$cpu_us" -v b="$tx" 'BEGIN{printf "%.1f", a/b}')")"
}

log "runs: $ROUNDS rounds x clients {$CLIENTS} x targets {$TARGETS${GH_VARIANTS:+ as $GH_VARIANTS}} x ${DURATION}s"
for round in $(seq "$ROUNDS"); do
  for c in $CLIENTS; do
    want direct && run_one direct "$c" "$round"
    for i in "${!GH_NAMES[@]}"; do run_one "${GH_NAMES[$i]}" "$c" "$round" "$i"; done
    want pgbouncer && run_one pgbouncer "$c" "$round"
  done
done

# --- (e) the table ------------------------------------------------------------------------
python3 - "$JSONL" >"$TABLE" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
med = lambda xs: statistics.median(xs) if xs else None
first = runs[0]
by = {(r["target"], r["clients"], r["round"]): r for r in runs}
rounds = sorted({r["round"] for r in runs})
clients = sorted({r["clients"] for r in runs}, reverse=True)
seen = list(dict.fromkeys(r["target"] for r in runs))
order = [t for t in seen if t == "direct"] + [t for t in seen if t.startswith("gatehouse")] + [t for t in seen if t == "pgbouncer"]
gh = {r["target"]: f"{r['target']}: workers={r['gh_workers']} io_driver={r['gh_io_driver']} scan={r.get('gh_scan')}" for r in runs if r["gh_workers"] is not None}
def col(t, c, fn, other=None):
    """Median over rounds of fn(run[, run of `other` in the same round]):
    ratios and differences are paired within a round, so drift between
    rounds cancels."""
    xs = []
    for n in rounds:
        r = by.get((t, c, n))
        o = by.get((other, c, n)) if other else None
        if r is None or (other and o is None):
            continue
        v = fn(r, o) if other else fn(r)
        if v is not None:
            xs.append(v)
    return med(xs)
cpu = lambda r: r["proxy_cpu_us"] / r["transactions"] if r["proxy_cpu_us"] is not None and r["transactions"] else None
print(f"pgbench -n -S -M prepared, {first['duration_s']} s per run, medians of {len(rounds)} interleaved rounds "
      f"(ratios and added latency paired within each round); scale {first['scale']}, {first['cores']} cores"
      + "".join(f"; {v}" for v in gh.values())
      + (f"; label {first['label']}" if first['label'] else ""))
print()
print("| target | clients | TPS | mean latency (ms) | latency added vs direct (µs) | TPS ratio vs direct | TPS ratio vs PgBouncer | proxy CPU µs/tx |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
f = lambda x, p: "n/a" if x is None else f"{x:.{p}f}"
for c in clients:
    for t in order:
        tps = col(t, c, lambda r: r["tps"])
        if tps is None:
            continue
        lat = col(t, c, lambda r: r["latency_ms"])
        added = None if t == "direct" else col(t, c, lambda r, o: (r["latency_ms"] - o["latency_ms"]) * 1000, "direct")
        rd = col(t, c, lambda r, o: r["tps"] / o["tps"], "direct")
        rb = col(t, c, lambda r, o: r["tps"] / o["tps"], "pgbouncer")
        print(f"| {t} | {c} | {tps:.0f} | {lat:.3f} | {f(added, 0)} | {f(rd, 3)} | {f(rb, 3)} | {f(col(t, c, cpu), 1)} |")
PY
cat "$TABLE"
log "table: $TABLE"
log "raw:   $JSONL"
