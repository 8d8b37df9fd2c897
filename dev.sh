#!/usr/bin/env bash
# gatehouse developer entry point. Two commands do all the set-up on a fresh
# Debian 12 machine:
#
#   ./dev.sh start   build, make sure PostgreSQL runs, serve policies/gatehouse.toml
#   ./dev.sh test    install what the tests need, make sure PostgreSQL and MariaDB run, run every test
#   ./dev.sh appliance   build the VM appliance image and smoke-test it under QEMU (root or sudo)
#   ./dev.sh fuzz [SECONDS]   run every fuzz target that long (cargo-fuzz; default 60 s each)
#
set -euo pipefail
cd "$(dirname "$0")"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Debian packages the build and the tests use; installed only when missing.
PACKAGES=(postgresql-client pgbouncer clang libclang-dev libhyperscan-dev pkg-config
  # MySQL drivers the MySQL tests run through gatehouse (Debian's python3).
  python3-pymysql python3-mysqldb python3-cryptography)
# The console's browser tests drive a headless Chromium over WebDriver.
TEST_PACKAGES=(chromium chromium-driver)
# The MySQL protocol tests talk to a MariaDB server on 127.0.0.1:3306 (root
# without a password, database `test`).
MARIADB_PACKAGES=(mariadb-server mariadb-client)

ensure_packages() {
  local missing=()
  for p in "${PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
  fi
}

ensure_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432; then return; fi
  log "starting PostgreSQL"
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    local v
    v=$(ls /etc/postgresql | sort -V | tail -1)
    pg_ctlcluster --skip-systemctl-redirect "$v" main start || true
  fi
  for _ in $(seq 1 60); do
    pg_isready -q -h 127.0.0.1 -p 5432 && return
    sleep 0.5
  done
  echo "PostgreSQL is not answering on 127.0.0.1:5432" >&2
  exit 1
}

ensure_mariadb() {
  local sql=(mariadb --protocol=tcp -h 127.0.0.1 -P 3306 -u root)
  if command -v mariadb >/dev/null && "${sql[@]}" -e 'SELECT 1' >/dev/null 2>&1; then
    "${sql[@]}" -e 'CREATE DATABASE IF NOT EXISTS test'
    return
  fi
  local missing=()
  for p in "${MARIADB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
  fi
  log "starting MariaDB"
  $sudo mkdir -p /run/mysqld
  $sudo chown mysql:mysql /run/mysqld 2>/dev/null || true
  $sudo start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
  for _ in $(seq 1 60); do
    if "${sql[@]}" -e 'SELECT 1' >/dev/null 2>&1; then
      "${sql[@]}" -e 'CREATE DATABASE IF NOT EXISTS test'
      return
    fi
    sleep 0.5
  done
  echo "MariaDB is not answering on 127.0.0.1:3306" >&2
  exit 1
}

ensure_nextest() {
  command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
}

# The S3-compatible server of the fleet tests (tests/fleet.rs): s3s-fs, a
# Rust S3 server on a directory that checks SigV4 signatures, from
# crates.io (0.14.1: the last release that builds with Rust 1.95).
S3S_ROOT=/opt/gatehouse-test-tools
ensure_s3_server() {
  [ -x "$S3S_ROOT/bin/s3s-fs" ] && return
  log "installing s3s-fs (the fleet tests' S3 server) into $S3S_ROOT"
  cargo install --locked --quiet s3s-fs --version 0.14.1 --features binary --root "$S3S_ROOT"
}

case "${1:-}" in
  start)
    ensure_packages
    ensure_postgres
    ensure_mariadb
    log "building gatehouse (release)"
    cargo build --release --locked
    log "serving policies/gatehouse.toml on 127.0.0.1:6432 (the demo: reads pass, writes wait for approval, DDL is denied, secrets are masked, sessions are recorded)"
    echo '    the agent:    psql "host=127.0.0.1 port=6432 dbname=postgres user=demo password=demo-token-change-me"' >&2
    echo '                  mariadb -h 127.0.0.1 -P 3307 -u demo -pdemo-token-change-me test' >&2
    echo '    the console:  http://127.0.0.1:9090/console  (sign in as the demo approver: approver-token-change-me)' >&2
    echo '    the walkthrough: README.md, "Quick start"' >&2
    exec ./target/release/gatehouse serve --config policies/gatehouse.toml
    ;;
  test)
    ensure_packages "${TEST_PACKAGES[@]}"
    ensure_postgres
    ensure_mariadb
    ensure_nextest
    ensure_s3_server
    log "format and lints"
    cargo fmt --check
    cargo clippy --locked --workspace --all-targets -- -D warnings
    log "configuration check of the example"
    cargo run --quiet --locked -- check --config policies/gatehouse.toml
    log "tests"
    cargo nextest run --locked --workspace --no-fail-fast
    log "load harness smoke run: every scenario for about a second (loadtest/smoke.toml)"
    cargo run --quiet --locked -p gatehouse-load -- smoke
    # Each benchmark runs once in criterion's test mode, on the test build:
    # enough to keep them from rotting without an optimised build of the
    # whole tree of their own (the slowest step of a CI run on a small
    # host). Figures come from `cargo bench`, never from CI.
    log "benchmarks, each run once (criterion's test mode)"
    cargo test --locked --bench framer --bench scan --bench classify --bench record >/dev/null
    ;;
  appliance)
    ensure_packages
    ensure_postgres
    ensure_mariadb
    log "building gatehouse (release)"
    cargo build --release --locked -p gatehouse
    log "appliance: image build, boot under QEMU, smoke test"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    exec $sudo env GATEHOUSE_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/gatehouse" appliance/smoke-test.sh
    ;;
  fuzz)
    # Every fuzz target (fuzz/fuzz_targets) for SECONDS each (default 60),
    # from the committed corpus (fuzz/corpus/<target>, read only) into a
    # working one (fuzz/work/<target>); a crash is kept in
    # fuzz/artifacts/<target> and fails the command.
    secs=${2:-60}
    ensure_packages
    command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
    # cargo-fuzz passes flags only nightly accepts by default; the stable
    # toolchain takes them with this. No sanitizer: the code under test is
    # safe Rust (and libpg_query, which bounds its own recursion).
    export RUSTC_BOOTSTRAP=1
    failed=()
    for t in pg_frames pg_values mysql_packets classify recording; do
      mkdir -p "fuzz/work/$t"
      log "fuzz $t for ${secs}s"
      if ! (cd fuzz && cargo fuzz run -s none -O "$t" "work/$t" "corpus/$t" -- \
              -max_total_time="$secs" -rss_limit_mb=4096 -print_final_stats=1 2>&1 \
            | grep -E "^(#[0-9]+ +DONE|Done|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+== ERROR|SUMMARY)|panicked"); then
        :
      fi
      if [ -n "$(ls -A "fuzz/artifacts/$t" 2>/dev/null)" ]; then failed+=("$t"); fi
    done
    if [ ${#failed[@]} -gt 0 ]; then
      echo "fuzz: crashes in ${failed[*]} (fuzz/artifacts)" >&2
      exit 1
    fi
    log "fuzz: no crash"
    ;;
  *)
    echo "usage: ./dev.sh start|test|appliance|fuzz [SECONDS]" >&2
    exit 2
    ;;
esac
