#!/usr/bin/env bash
# Whole-system and hot-function benchmarks of the CA. Prints the machine, the
# criterion figures for the signing path, and tessera-load figures against a
# release tessera-ca on SQLite and on PostgreSQL, and against cfssl 1.2 (Debian's
# golang-cfssl, `cfssl serve` over TLS, no certificate database) with the same
# load in the same run, so ratios hold on a drifting shared machine.
#   bench/run.sh                 # everything
#   CLIENTS=16 REQUESTS=20000 bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/cfssl.sh
source bench/cfssl.sh
CLIENTS=${CLIENTS:-16}
REQUESTS=${REQUESTS:-20000}
PG_ADMIN=${TESSERA_BENCH_POSTGRES_URL:-postgres://tessera:tessera@127.0.0.1:5432/postgres}

echo "== machine"
echo "$(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "rustc $(rustc --version | cut -d' ' -f2), $(date -u +%Y-%m-%dT%H:%MZ)"

cargo build --release -q --bin tessera-ca --bin tessera-load

echo "== signing path (criterion)"
cargo bench -q -p tessera-ca-server --bench signing -- --warm-up-time 1 --measurement-time 5 2>&1 \
    | grep -E '^issue/|time:|thrpt:' || true

work=$(mktemp -d)
ca_pid=""
cleanup() {
    [ -n "$ca_pid" ] && kill "$ca_pid" 2>/dev/null && wait "$ca_pid" 2>/dev/null
    [ -n "${pg_db:-}" ] && psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT

run_load() { # $1 label, $2 database url ('' = sqlite)
    local dir="$work/$1"
    mkdir -p "$dir"
    local args=(--listen 127.0.0.1:0 --data-dir "$dir/data")
    [ -n "$2" ] && args+=(--database-url "$2")
    TESSERA_LOG=warn ./target/release/tessera-ca "${args[@]}" >"$dir/out" 2>"$dir/err" &
    ca_pid=$!
    for _ in $(seq 300); do grep -q listening "$dir/out" 2>/dev/null && break; sleep 0.1; done
    grep -q listening "$dir/out" || { cat "$dir/err"; exit 1; }
    echo "== issuance end to end, $1, $CLIENTS clients"
    ./target/release/tessera-load --data-dir "$dir/data" --clients "$CLIENTS" --requests "$REQUESTS"
    kill "$ca_pid"; wait "$ca_pid" 2>/dev/null || true; ca_pid=""
}

run_load sqlite ""

echo "== cfssl 1.2 serve (TLS, no ledger), $CLIENTS clients"
command -v cfssl >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-cfssl >/dev/null
cf="$work/cfssl"
cfssl_pki "$cf"
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
cfssl_serve "$cf" "$port"
ca_pid=$!
./target/release/tessera-load --cfssl "https://localhost:$port" --ca-bundle "$cf/ca.pem" --clients "$CLIENTS" --requests "$REQUESTS"
kill "$ca_pid"; wait "$ca_pid" 2>/dev/null || true; ca_pid=""
pg_db="tessera_bench_$$"
psql -q "$PG_ADMIN" -c "CREATE DATABASE $pg_db" >/dev/null
run_load postgres "${PG_ADMIN%/*}/$pg_db"
