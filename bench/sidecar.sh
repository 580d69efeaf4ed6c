#!/usr/bin/env bash
# Sidecar data-plane benchmark: the same client/server pair of TLS 1.3
# terminators with client certificates, in front of one backend, in one run:
# plain TCP (no proxy), a pair of tessera-sidecars, and a pair of stunnels.
# Loads: keep-alive HTTP (wrk, 16 connections), a new connection per request
# (wrk, Connection: close), bulk throughput (iperf3, one stream).
#   bench/sidecar.sh            (DURATION=10 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
export DEBIAN_FRONTEND=noninteractive
for p in wrk iperf3 stunnel4 nginx-light; do dpkg -s "$p" >/dev/null 2>&1 || apt-get install -y -qq "$p" >/dev/null; done
cargo build --release -q --bin tessera-ca --bin tessera --bin tessera-sidecar
bin="$PWD/target/release"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done; cat "$1" >&2; exit 1; }
export PATH="$bin:$PATH"

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%Y-%m-%dT%H:%MZ)"
TESSERA_LOG=warn tessera-ca --listen 127.0.0.1:0 >ca.out 2>ca.err & pids+=($!)
wait_for ca.out listening
server=$(sed -n 's/^server = "\(.*\)"/\1/p' data/admin/cli.toml)
for w in client server sc-a sc-b; do
    tessera entry create --spiffe-id "spiffe://example.org/$w" --selector "bench:$w" --ttl 24h >/dev/null
done
for w in client server; do
    tessera cert issue --token "$(tessera token create --spiffe-id spiffe://example.org/$w)" --out-dir "$w" >/dev/null
done

# Backends: nginx (one worker) serving a small body for HTTP, iperf3 for bulk.
http=$(port); bulk=$(port)
mkdir -p www && printf 'hello\n' >www/index.html
cat >nginx.conf <<NGX
user root; worker_processes 1; daemon off; pid $work/nginx.pid; error_log $work/nginx.err;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$http; root $work/www; keepalive_requests 1000000; } }
NGX
nginx -c "$work/nginx.conf" & pids+=($!)
iperf3 -s -B 127.0.0.1 -p "$bulk" >/dev/null 2>&1 & pids+=($!)

# Tessera pair: A (outbound, plaintext in) -> B (inbound) -> backend; one per backend.
sidecars() { # name backend-port -> prints A's listen port
    local n=$1 backend=$2 bin_port=$(port) aout=$(port)
    printf 'ca_url = "%s"\nca_bundle = "%s"\nadmin_listen = "127.0.0.1:0"\n[revocation]\nfollow = true\n[[inbound]]\nname = "in"\nlisten = "127.0.0.1:%s"\nforward = "127.0.0.1:%s"\nallow = ["spiffe://example.org/sc-a"]\n' \
        "$server" "$PWD/data/admin/bundle.pem" "$bin_port" "$backend" >"b-$n.toml"
    printf 'ca_url = "%s"\nca_bundle = "%s"\nadmin_listen = "127.0.0.1:0"\n[[outbound]]\nname = "out"\nlisten = "127.0.0.1:%s"\nupstream = "127.0.0.1:%s"\nserver_id = "spiffe://example.org/sc-b"\n' \
        "$server" "$PWD/data/admin/bundle.pem" "$aout" "$bin_port" >"a-$n.toml"
    TESSERA_JOIN_TOKEN=$(tessera token create --spiffe-id spiffe://example.org/sc-b) TESSERA_LOG=warn,tessera_sidecar=info \
        tessera-sidecar --config "b-$n.toml" >"b-$n.out" 2>"b-$n.err" & pids+=($!)
    TESSERA_JOIN_TOKEN=$(tessera token create --spiffe-id spiffe://example.org/sc-a) TESSERA_LOG=warn,tessera_sidecar=info \
        tessera-sidecar --config "a-$n.toml" >"a-$n.out" 2>"a-$n.err" & pids+=($!)
    wait_for "b-$n.err" ' ready'; wait_for "a-$n.err" ' ready'
    echo "$aout"
}
# stunnel pair, the same shape: client (plaintext in, TLS 1.3 with a client cert out) -> server (verifies) -> backend.
stunnels() {
    local n=$1 backend=$2 sport=$(port) cport=$(port)
    cat >"st-$n-server.conf" <<ST
foreground = yes
pid =
[s]
accept = 127.0.0.1:$sport
connect = 127.0.0.1:$backend
cert = $work/server/cert.pem
key = $work/server/key.pem
CAfile = $work/server/bundle.pem
verifyChain = yes
requireCert = yes
sslVersion = TLSv1.3
ST
    cat >"st-$n-client.conf" <<ST
foreground = yes
pid =
[c]
client = yes
accept = 127.0.0.1:$cport
connect = 127.0.0.1:$sport
cert = $work/client/cert.pem
key = $work/client/key.pem
CAfile = $work/client/bundle.pem
verifyChain = yes
sslVersion = TLSv1.3
ST
    stunnel4 "st-$n-server.conf" >/dev/null 2>&1 & pids+=($!)
    stunnel4 "st-$n-client.conf" >/dev/null 2>&1 & pids+=($!)
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$cport) 2>/dev/null && break; sleep 0.05; done
    echo "$cport"
}
t_http=$(sidecars http "$http"); t_bulk=$(sidecars bulk "$bulk")
s_http=$(stunnels http "$http"); s_bulk=$(stunnels bulk "$bulk")

wrk_line() { # label port extra-args...
    local label=$1 p=$2; shift 2
    wrk -t2 -c16 -d"${DURATION}s" --latency "$@" "http://127.0.0.1:$p/" >wrk.out 2>&1 || true
    printf '%-10s %10s req/s  p50 %8s  p99 %8s  errors %s\n' "$label" \
        "$(awk '/Requests\/sec/ {print $2}' wrk.out)" "$(awk '$1=="50%" {print $2}' wrk.out)" "$(awk '$1=="99%" {print $2}' wrk.out)" \
        "$(awk '/Socket errors|Non-2xx/ {print}' wrk.out | tr '\n' ' ')"
}
echo "== keep-alive HTTP (wrk, 16 connections, ${DURATION}s)"
wrk_line plain "$http"; wrk_line tessera "$t_http"; wrk_line stunnel "$s_http"
echo "== new connection per request (wrk -H 'Connection: close', 16 concurrent, ${DURATION}s)"
wrk_line plain "$http" -H "Connection: close"; wrk_line tessera "$t_http" -H "Connection: close"; wrk_line stunnel "$s_http" -H "Connection: close"
echo "== bulk (iperf3, one stream, ${DURATION}s)"
for pair in "plain $bulk" "tessera $t_bulk" "stunnel $s_bulk"; do
    set -- $pair
    printf '%-10s %s\n' "$1" "$(iperf3 -c 127.0.0.1 -p "$2" -t "$DURATION" -f g 2>&1 | awk '/receiver/ {print $7, $8}')"
done
echo "== sidecar RSS (KiB) after the run"
for f in a-http b-http a-bulk b-bulk; do
    pid=$(pgrep -f "tessera-sidecar --config $f.toml" | head -1)
    printf '%-8s %s\n' "$f" "$(awk '/VmRSS/ {print $2}' /proc/$pid/status)"
done
