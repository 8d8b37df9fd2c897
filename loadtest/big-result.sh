#!/usr/bin/env bash
# A large result through gatehouse with secret masking on, against psql
# straight to PostgreSQL: wall time and gatehouse's peak RSS.
#
#   loadtest/big-result.sh                 # 1M rows (~250 MB), 3 interleaved rounds
#   ROWS=200000 ROUNDS=1 loadtest/big-result.sh
#
# The query is `select g, md5(g::text), repeat('x',200) from
# generate_series(1,ROWS) g`, read by psql into /dev/null. Only 127.0.0.1.
# Environment: ROWS (1000000), ROUNDS (3), GH_BIN (target/release/gatehouse,
# built if missing), GH_PORT (6435), SCAN (on|off, default on), WORKERS (nproc),
# RECORD (none|summary|full: also run a second gatehouse on GH_PORT+1 that
# records sessions, in the same interleaved rounds), REC_EXTRA (more TOML
# lines for [recording], e.g. "full_max_rows = 2000000").
set -euo pipefail
ROWS=${ROWS:-1000000}
ROUNDS=${ROUNDS:-3}
GH_PORT=${GH_PORT:-6435}
SCAN=${SCAN:-on}
WORKERS=${WORKERS:-$(nproc)}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
GH_BIN=${GH_BIN:-$ROOT/target/release/gatehouse}
[ -x "$GH_BIN" ] || (cd "$ROOT" && cargo build --release --quiet)

TMP=$(mktemp -d)
GH_PID=
cleanup() { [ -n "$GH_PID" ] && kill "$GH_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

TOKEN=bench-token-$RANDOM$RANDOM
HASH=$(printf %s "$TOKEN" | "$GH_BIN" token hash)
enabled=true; [ "$SCAN" = off ] && enabled=false
config() { # $1 = port, $2 = extra TOML
cat <<CFG
[server]
listen = ["127.0.0.1:$1"]
workers = $WORKERS
allow_cleartext_on_loopback = true
[log]
level = "warn"
[scan]
enabled = $enabled
[[target]]
name = "postgres"
database = "postgres"
host = "127.0.0.1"
port = 5432
user = "postgres"
tls = "disable"
[[identity]]
name = "bench"
token_hash = "$HASH"
targets = ["*"]
$2
CFG
}
config "$GH_PORT" "" >"$TMP/gatehouse.toml"
"$GH_BIN" serve --config "$TMP/gatehouse.toml" 2>"$TMP/gh.log" &
GH_PID=$!
for _ in $(seq 100); do pg_isready -q -h 127.0.0.1 -p "$GH_PORT" && break; sleep 0.05; done
REC_PID=
if [ -n "${RECORD:-}" ]; then
  REC_PORT=$((GH_PORT + 1))
  config "$REC_PORT" "$(printf '[recording]\ndir = "%s"\nresults = "%s"\n%s\n' "$TMP/rec" "$RECORD" "${REC_EXTRA:-}")" >"$TMP/gatehouse-rec.toml"
  "$GH_BIN" serve --config "$TMP/gatehouse-rec.toml" 2>"$TMP/gh-rec.log" &
  REC_PID=$!
  for _ in $(seq 100); do pg_isready -q -h 127.0.0.1 -p "$REC_PORT" && break; sleep 0.05; done
fi
cleanup() { [ -n "$GH_PID" ] && kill "$GH_PID" 2>/dev/null; [ -n "$REC_PID" ] && kill "$REC_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }

Q="select g, md5(g::text), repeat('x',200) from generate_series(1,$ROWS) g"
run() { # $1 = port, $2 = user, $3 = password
  local s e
  s=$(date +%s.%N)
  PGPASSWORD=$3 psql -X -q "host=127.0.0.1 port=$1 user=$2 dbname=postgres sslmode=disable" -c "$Q" >/dev/null
  e=$(date +%s.%N)
  echo "$e - $s" | bc
}
direct=() gh=() rec=()
for r in $(seq "$ROUNDS"); do
  direct+=("$(run 5432 postgres x)")
  gh+=("$(run "$GH_PORT" bench "$TOKEN")")
  [ -n "$REC_PID" ] && rec+=("$(run "$REC_PORT" bench "$TOKEN")")
  echo "round $r: direct ${direct[-1]} s, gatehouse ${gh[-1]} s${REC_PID:+, gatehouse recording $RECORD ${rec[-1]} s}" >&2
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
md=$(median "${direct[@]}")
mg=$(median "${gh[@]}")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$GH_PID/status")
bytes=$(grep -o 'bytes_out=[0-9]*' "$TMP/gh.log" | tail -1 | cut -d= -f2 || true)
printf '| rows | scan | direct psql (s) | through gatehouse (s) | ratio | gatehouse peak RSS (MiB) |\n|---:|---|---:|---:|---:|---:|\n'
printf '| %s | %s | %.2f | %.2f | %.3f | %.1f |\n' "$ROWS" "$SCAN" "$md" "$mg" "$(echo "$mg / $md" | bc -l)" "$(echo "$hwm / 1024" | bc -l)"
if [ -n "$REC_PID" ]; then
  mr=$(median "${rec[@]}")
  rhwm=$(awk '/VmHWM/ {print $2}' "/proc/$REC_PID/status")
  size=$(du -sk "$TMP/rec" | cut -f1)
  printf '\n| recording | through gatehouse (s) | vs recording off | peak RSS (MiB) | recording size (MiB) |\n|---|---:|---:|---:|---:|\n'
  printf '| off | %.2f | 1.000 | %.1f | |\n' "$mg" "$(echo "$hwm / 1024" | bc -l)"
  printf '| %s | %.2f | %.3f | %.1f | %.1f |\n' "$RECORD" "$mr" "$(echo "$mr / $mg" | bc -l)" "$(echo "$rhwm / 1024" | bc -l)" "$(echo "$size / 1024" | bc -l)"
  "$GH_BIN" verify "$TMP/rec" | tail -1
fi
