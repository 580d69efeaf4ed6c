#!/usr/bin/env bash
# CA issuance, Tessera against cfssl 1.2, driven by the same independent load
# tool: h2load (Debian's nghttp2-client). Same CSR, same connections, same
# body size order, in the same run, ROUNDS rounds, alternating the two CAs so
# drift hits both; prints every round and the median ratio (Tessera / cfssl).
#
#   bench/issuance.sh                       # 5 rounds, 16 connections, 10 s each
#   ROUNDS=3 CONNS=16 SECONDS_PER=10 DB=postgres bench/issuance.sh
#
# Tessera: release tessera-ca, durable ledger (SQLite WAL synchronous=FULL by
# default, or PostgreSQL with DB=postgres), bearer API token of role issuer,
# POST /v1/certs; over HTTP/1.1 and HTTP/2. cfssl: `cfssl serve` over TLS with
# no certificate database, POST /api/v1/cfssl/sign; over HTTP/1.1 and HTTP/2
# (Go's server offers h2). h2load uses one thread (one core) for both, so the
# load tool takes the same share of the machine from each.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/cfssl.sh
source bench/cfssl.sh
ROUNDS=${ROUNDS:-5}
CONNS=${CONNS:-16}
SECONDS_PER=${SECONDS_PER:-10}
DB=${DB:-sqlite}
PG_ADMIN=${TESSERA_BENCH_POSTGRES_URL:-postgres://tessera:tessera@127.0.0.1:5432/postgres}
TARGET=${CARGO_TARGET_DIR:-target}

need=()
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v cfssl >/dev/null || need+=(golang-cfssl)
if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

echo "== machine"
echo "$(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "rustc $(rustc --version | cut -d' ' -f2), $(h2load --version | head -1), cfssl $(cfssl version | awk '/Version/{print $2}'), $(date -u +%Y-%m-%dT%H:%MZ)"
echo "load: h2load -t 1 -c $CONNS -m 1 -D $SECONDS_PER --warm-up-time 2, $ROUNDS rounds, Tessera ledger on $DB"

# Built per package, so features resolve as they do for each binary alone.
cargo build --release -q --locked -p tessera-ca-server --bin tessera-ca
cargo build --release -q --locked -p tessera-cli --bin tessera

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    [ -n "${pg_db:-}" ] && psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" >/dev/null 2>&1
    rm -rf "$work"
    return 0
}
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# One CSR for both CAs (P-256, as Tessera's workloads make them).
openssl ecparam -name prime256v1 -genkey -noout -out "$work/leaf.key" 2>/dev/null
openssl req -new -key "$work/leaf.key" -subj /CN=load -out "$work/leaf.csr" 2>/dev/null
csr_json=$(python3 -c 'import json,sys;print(json.dumps(open(sys.argv[1]).read()))' "$work/leaf.csr")

# Tessera.
args=(--listen 127.0.0.1:0 --data-dir "$work/ca")
if [ "$DB" = postgres ]; then
    pg_db="tessera_bench_$$"
    psql -q "$PG_ADMIN" -c "CREATE DATABASE $pg_db" >/dev/null
    args+=(--database-url "${PG_ADMIN%/*}/$pg_db")
fi
TESSERA_LOG=warn "$TARGET/release/tessera-ca" "${args[@]}" >"$work/ca.out" 2>"$work/ca.err" &
pids+=($!)
for _ in $(seq 300); do grep -q listening "$work/ca.out" 2>/dev/null && break; sleep 0.1; done
grep -q listening "$work/ca.out" || { cat "$work/ca.err"; exit 1; }
cli=("$TARGET/release/tessera" --data-dir "$work/ca")
"${cli[@]}" entry create --spiffe-id spiffe://example.org/load --selector load:test >/dev/null
token=$("${cli[@]}" api-token create --name bench --role issuer | tail -1)
tessera_url=$(awk -F'"' '/^server/{print $2}' "$work/ca/admin/cli.toml")
printf '{"spiffe_id":"spiffe://example.org/load","csr":%s}' "$csr_json" >"$work/tessera.json"

# cfssl 1.2 serve, TLS, no certificate database.
cf="$work/cfssl"
cfssl_pki "$cf"
cf_port=$(free_port)
cfssl_serve "$cf" "$cf_port"
pids+=($!)
cfssl_url="https://127.0.0.1:$cf_port"
printf '{"certificate_request":%s,"hosts":["load.internal"]}' "$csr_json" >"$work/cfssl.json"

# One h2load run; prints "req/s mean bad done": bad counts non-2xx answers and
# failed or errored requests (h2load's status counts include the warm-up).
load() { # $1 url, $2 body, $3 protocol (h1|h2), extra headers...
    local url=$1 body=$2 proto=$3
    shift 3
    local p=()
    [ "$proto" = h1 ] && p=(--h1)
    local out
    out=$(h2load -t 1 -c "$CONNS" -m 1 -D "$SECONDS_PER" --warm-up-time 2 "${p[@]}" \
        -d "$body" -H 'content-type: application/json' "$@" "$url" 2>&1)
    awk '
        /^finished in/ { gsub(",", "", $4); rps = $4 }
        /^time for request:/ { mean = $6 }
        /^requests:/ { done = $6; bad += $10 + $12 }
        /^status codes:/ { bad += $5 + $7 + $9 }
        END { print rps, mean, bad + 0, done + 0 }' <<<"$out"
}

check() { # $1 label, $2 result line: every request answered 2xx
    read -r _ _ bad done <<<"$2"
    if [ "$bad" != 0 ] || [ "$done" = 0 ]; then
        echo "$1: $bad of $done requests failed or answered other than 2xx" >&2
        exit 1
    fi
}

# Both answer correctly before anything is timed.
curl -sf --cacert "$work/ca/admin/bundle.pem" -H "authorization: Bearer $token" \
    -H 'content-type: application/json' --data-binary @"$work/tessera.json" \
    "$tessera_url/v1/certs" -o /dev/null
curl -sf --cacert "$cf/ca.pem" --data-binary @"$work/cfssl.json" \
    "https://localhost:$cf_port/api/v1/cfssl/sign" -o /dev/null

results="$work/results"
: >"$results"
printf '\n%-6s %-22s %12s %10s\n' round target 'certs/s' 'mean'
for r in $(seq "$ROUNDS"); do
    t1=$(load "$tessera_url/v1/certs" "$work/tessera.json" h1 -H "authorization: Bearer $token")
    check "tessera h1" "$t1"
    c1=$(load "$cfssl_url/api/v1/cfssl/sign" "$work/cfssl.json" h1)
    check "cfssl h1" "$c1"
    c2=$(load "$cfssl_url/api/v1/cfssl/sign" "$work/cfssl.json" h2)
    check "cfssl h2" "$c2"
    t2=$(load "$tessera_url/v1/certs" "$work/tessera.json" h2 -H "authorization: Bearer $token")
    check "tessera h2" "$t2"
    printf '%-6s %-22s %12s %10s\n' "$r" "Tessera HTTP/1.1" $(cut -d' ' -f1,2 <<<"$t1")
    printf '%-6s %-22s %12s %10s\n' "$r" "cfssl HTTP/1.1" $(cut -d' ' -f1,2 <<<"$c1")
    printf '%-6s %-22s %12s %10s\n' "$r" "cfssl HTTP/2" $(cut -d' ' -f1,2 <<<"$c2")
    printf '%-6s %-22s %12s %10s\n' "$r" "Tessera HTTP/2" $(cut -d' ' -f1,2 <<<"$t2")
    echo "$r $(cut -d' ' -f1 <<<"$t1") $(cut -d' ' -f1 <<<"$c1") $(cut -d' ' -f1 <<<"$c2") $(cut -d' ' -f1 <<<"$t2")" >>"$results"
done

python3 - "$results" <<'EOF'
import statistics, sys
rows = [list(map(float, l.split()[1:])) for l in open(sys.argv[1]) if l.strip()]
h1 = [t1 / c1 for t1, c1, _, _ in rows]
h2 = [t2 / c2 for _, _, c2, t2 in rows]
print()
print("ratio Tessera/cfssl per round, HTTP/1.1:", " ".join(f"{x:.2f}" for x in h1))
print("ratio Tessera/cfssl per round, HTTP/2:  ", " ".join(f"{x:.2f}" for x in h2))
print(f"median ratio HTTP/1.1 {statistics.median(h1):.2f}x, HTTP/2 {statistics.median(h2):.2f}x;"
      f" median certs/s Tessera h1 {statistics.median(r[0] for r in rows):.0f},"
      f" h2 {statistics.median(r[3] for r in rows):.0f}; cfssl h1 {statistics.median(r[1] for r in rows):.0f},"
      f" h2 {statistics.median(r[2] for r in rows):.0f}")
EOF
