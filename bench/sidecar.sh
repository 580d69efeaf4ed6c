#!/usr/bin/env bash
# Sidecar data-plane benchmark. The same client/server pair of TLS 1.3
# terminators with client certificates (client side: plaintext in, TLS 1.3
# with a client certificate out; server side: requires and verifies the client
# certificate against the bundle, plaintext to the backend), in front of one
# backend, all in one run:
#   plain         no proxy, the backend directly
#   tessera       a pair of tessera-sidecars as shipped (allow-list, revocation
#                 feed followed, metrics on)
#   tessera-bare  the same pair with an allow-all policy (spiffe://example.org/*),
#                 no revocation feed and metrics off (the ≤ 10 % overhead target)
#   stunnel, haproxy, nginx (stream module): Debian's packages, one process
#                 each side, 1 worker/thread (stunnel: its thread per connection)
# Session resumption is off on every peer (no tickets, no cache, no client
# reuse); a resumption check sniffs the ClientHellos between the two sides.
# Loads: keep-alive HTTP (wrk, 16 connections, p50/p99), a new connection and
# a full handshake per request (wrk, Connection: close), bulk (iperf3, one
# stream). CPU: utime+stime of the pair's two processes (/proc/PID/stat) per
# request. Memory: VmRSS of each side after start, and its growth with CONNS
# idle keep-alive connections open through the pair.
#   bench/sidecar.sh                                      (DURATION=10 ROUNDS=1 CONNS=1000)
#   DURATION=10 ROUNDS=3 PEERS="tessera tessera-bare" bench/sidecar.sh
# Binaries come from ${CARGO_TARGET_DIR:-target}/release. TESSERA_THREADS sets
# the sidecars' tokio worker threads (default 1, like the peers).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-1}
CONNS=${CONNS:-1000}
PEERS=${PEERS:-plain tessera tessera-bare stunnel haproxy nginx}
TESSERA_THREADS=${TESSERA_THREADS:-1}
export DEBIAN_FRONTEND=noninteractive
for p in wrk iperf3 stunnel4 haproxy nginx-light libnginx-mod-stream; do
    dpkg -s "$p" >/dev/null 2>&1 || apt-get install -y -qq "$p" >/dev/null
done
cargo build --release -q --bin tessera-ca --bin tessera --bin tessera-sidecar
target=${CARGO_TARGET_DIR:-$PWD/target}
case $target in /*) ;; *) target="$PWD/$target" ;; esac
bin="$target/release"
here=$PWD
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done; cat "$1" >&2; exit 1; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
export PATH="$bin:$PATH"
hz=$(getconf CLK_TCK)
# CPU time (clock ticks) used so far by the given processes (all their threads).
cpu_ticks() { local t=0 p f; for p in "$@"; do f=$(sed 's/.*) //' "/proc/$p/stat"); set -- $f; t=$((t + ${12} + ${13})); done; echo $t; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
anon_kib() { awk '/RssAnon/ {print $2}' "/proc/$1/status"; }
results="$work/results.tsv"
: >"$results"
record() { printf '%s\t%s\t%s\t%s\n' "$round" "$1" "$2" "$3" >>"$results"; }

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB, $(. /etc/os-release; echo "$PRETTY_NAME"), $(date -u +%Y-%m-%dT%H:%MZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== peers: $(stunnel4 -version 2>&1 | awk '/^stunnel/ {print $1, $2; exit}'), $(haproxy -v | awk 'NR==1 {print $1, $3}'), $(nginx -v 2>&1 | cut -d' ' -f3), $(openssl version | cut -d' ' -f1-2); tessera threads $TESSERA_THREADS"
# The CA answers as 127.0.0.1 only, so the peers' host name "localhost" is free for
# the bench server's entry (an entry may not carry one of the CA's own names).
TESSERA_LOG=warn tessera-ca --listen 127.0.0.1:0 --set 'server_dns_names=[]' >ca.out 2>ca.err & pids+=($!)
wait_for ca.out listening
server=$(sed -n 's/^server = "\(.*\)"/\1/p' data/admin/cli.toml)
bundle="$work/data/admin/bundle.pem"
tessera entry create --spiffe-id spiffe://example.org/client --selector bench:client --ttl 24h >/dev/null
# The server certificate also names localhost, for the peers that check a host name.
tessera entry create --spiffe-id spiffe://example.org/server --selector bench:server --dns-name localhost --ttl 24h >/dev/null
for w in sc-a sc-b; do
    tessera entry create --spiffe-id "spiffe://example.org/$w" --selector "bench:$w" --ttl 24h >/dev/null
done
for w in client server; do
    tessera cert issue --token "$(tessera token create --spiffe-id spiffe://example.org/$w)" --out-dir "$w" >/dev/null
    cat "$w/cert.pem" "$w/key.pem" >"$w/both.pem" # HAProxy wants both in one file
done

# Backends: nginx (one worker) serving a small body over HTTP, iperf3 for bulk.
declare -A backend=([http]=$(port) [bulk]=$(port))
mkdir -p www && printf 'hello\n' >www/index.html && head -c 262144 /dev/urandom >www/big
cat >nginx.conf <<NGX
user root; worker_processes 1; daemon off; pid $work/nginx.pid; error_log $work/nginx.err; worker_rlimit_nofile 20000;
events { worker_connections 16384; }
http { access_log off; server { listen 127.0.0.1:${backend[http]}; root $work/www; keepalive_requests 1000000; keepalive_timeout 300s; } }
NGX
nginx -c "$work/nginx.conf" & pids+=($!)
iperf3 -s -B 127.0.0.1 -p "${backend[bulk]}" >/dev/null 2>&1 & pids+=($!)

# Each start_PEER KIND starts the pair for backend KIND (http or bulk) and sets
# port[PEER-KIND] (where the load connects), inner[...] (the TLS hop),
# cpid[...] and spid[...] (client- and server-side processes).
declare -A port inner cpid spid idle_c idle_s
start_plain() { port[plain-$1]=${backend[$1]}; }

# Starts the sidecar SIDE ("a" or "b") of pair N with identity spiffe://example.org/ID.
sidecar() { # side n id
    TOKIO_WORKER_THREADS=$TESSERA_THREADS TESSERA_JOIN_TOKEN=$(tessera token create --spiffe-id "spiffe://example.org/$3") \
        TESSERA_LOG=warn,tessera_sidecar=info tessera-sidecar --config "$1-$2.toml" >"$1-$2.out" 2>"$1-$2.err" &
    pids+=($!)
}

tessera_pair() { # peer kind bare(0|1)
    local n=$1-$2 bare=$3 bport=$(port) aport=$(port) allow=spiffe://example.org/sc-a follow=true metrics=true
    [ "$bare" = 1 ] && { allow='spiffe://example.org/*'; follow=false; metrics=false; }
    local head="ca_url = \"$server\"
ca_bundle = \"$bundle\"
admin_listen = \"127.0.0.1:0\"
metrics = $metrics
[revocation]
follow = $follow"
    cat >"b-$n.toml" <<T
$head
[[inbound]]
name = "in"
listen = "127.0.0.1:$bport"
forward = "127.0.0.1:${backend[$2]}"
allow = ["$allow"]
T
    cat >"a-$n.toml" <<T
$head
[[outbound]]
name = "out"
listen = "127.0.0.1:$aport"
upstream = "127.0.0.1:$bport"
server_id = "spiffe://example.org/sc-b"
T
    sidecar b "$n" sc-b; spid[$n]=$!
    sidecar a "$n" sc-a; cpid[$n]=$!
    wait_for "b-$n.err" ' ready'; wait_for "a-$n.err" ' ready'
    port[$n]=$aport; inner[$n]=$bport
}
start_tessera() { tessera_pair tessera "$1" 0; }
start_tessera-bare() { tessera_pair tessera-bare "$1" 1; }

# One side's stunnel identity: its certificate and key, the bundle it trusts.
stunnel_identity() {
    printf 'cert = %s\nkey = %s\nCAfile = %s\nverifyChain = yes' \
        "$work/$1/cert.pem" "$work/$1/key.pem" "$work/$1/bundle.pem"
}

# stunnel: syslog = no (without a syslog daemon glibc writes every log line to
# /dev/console, which cost stunnel 5x its connection rate here; see
# docs/benchmarks.md); debug = 3 logs errors only (to the .err file). The client
# never resumes (sessionResume = no, the default resumes every connection);
# the server sends stateful tickets at most (NO_TICKET; OpenSSL's TLS 1.3
# tickets cannot be turned off from stunnel) with a one-entry cache.
start_stunnel() {
    local n=stunnel-$1 sport=$(port) cport=$(port)
    local head="foreground = yes
pid =
syslog = no
debug = 3"
    cat >"st-$n-server.conf" <<ST
$head
[s]
accept = 127.0.0.1:$sport
connect = 127.0.0.1:${backend[$1]}
$(stunnel_identity server)
requireCert = yes
sslVersion = TLSv1.3
options = NO_TICKET
sessionCacheSize = 1
sessionCacheTimeout = 1
ST
    cat >"st-$n-client.conf" <<ST
$head
[c]
client = yes
accept = 127.0.0.1:$cport
connect = 127.0.0.1:$sport
$(stunnel_identity client)
checkHost = localhost
sslVersion = TLSv1.3
sessionResume = no
ST
    stunnel4 "st-$n-server.conf" >"st-$n-server.err" 2>&1 & pids+=($!); spid[$n]=$!
    stunnel4 "st-$n-client.conf" >"st-$n-client.err" 2>&1 & pids+=($!); cpid[$n]=$!
    wait_port "$sport"; wait_port "$cport"
    port[$n]=$cport; inner[$n]=$sport
}

# HAProxy 1 thread per side; no TLS session cache, no tickets, no client reuse.
start_haproxy() {
    local n=haproxy-$1 sport=$(port) cport=$(port)
    local head="global
    nbthread 1
    maxconn 8000
    tune.ssl.cachesize 0
defaults
    mode tcp
    timeout connect 5s
    timeout client 300s
    timeout server 300s"
    cat >"ha-$n-server.cfg" <<HA
$head
frontend tls
    bind 127.0.0.1:$sport ssl crt $work/server/both.pem ca-file $work/server/bundle.pem verify required ssl-min-ver TLSv1.3 no-tls-tickets
    default_backend app
backend app
    server app 127.0.0.1:${backend[$1]}
HA
    cat >"ha-$n-client.cfg" <<HA
$head
frontend plain
    bind 127.0.0.1:$cport
    default_backend tls
backend tls
    server s 127.0.0.1:$sport ssl crt $work/client/both.pem ca-file $work/client/bundle.pem verify required verifyhost localhost ssl-min-ver TLSv1.3 no-ssl-reuse
HA
    haproxy -db -f "ha-$n-server.cfg" >"ha-$n-server.err" 2>&1 & pids+=($!); spid[$n]=$!
    haproxy -db -f "ha-$n-client.cfg" >"ha-$n-client.err" 2>&1 & pids+=($!); cpid[$n]=$!
    wait_port "$sport"; wait_port "$cport"
    port[$n]=$cport; inner[$n]=$sport
}

# nginx stream module, one process per side (master_process off, so the one
# process is the worker); no session cache, no tickets, no client reuse.
start_nginx() {
    local n=nginx-$1 sport=$(port) cport=$(port)
    local head="load_module /usr/lib/nginx/modules/ngx_stream_module.so;
user root; worker_processes 1; master_process off; daemon off; worker_rlimit_nofile 20000;
events { worker_connections 16384; }"
    cat >"ng-$n-server.conf" <<NG
$head
pid $work/ng-$n-server.pid; error_log $work/ng-$n-server.err;
stream { server {
    listen 127.0.0.1:$sport ssl;
    ssl_protocols TLSv1.3;
    ssl_certificate $work/server/cert.pem; ssl_certificate_key $work/server/key.pem;
    ssl_client_certificate $work/server/bundle.pem; ssl_verify_client on; ssl_verify_depth 4;
    ssl_session_cache off; ssl_session_tickets off;
    proxy_pass 127.0.0.1:${backend[$1]};
} }
NG
    cat >"ng-$n-client.conf" <<NG
$head
pid $work/ng-$n-client.pid; error_log $work/ng-$n-client.err;
stream { server {
    listen 127.0.0.1:$cport;
    proxy_pass 127.0.0.1:$sport;
    proxy_ssl on; proxy_ssl_protocols TLSv1.3;
    proxy_ssl_certificate $work/client/cert.pem; proxy_ssl_certificate_key $work/client/key.pem;
    proxy_ssl_trusted_certificate $work/client/bundle.pem; proxy_ssl_verify on; proxy_ssl_verify_depth 4; proxy_ssl_name localhost;
    proxy_ssl_session_reuse off;
} }
NG
    nginx -c "$work/ng-$n-server.conf" & pids+=($!); spid[$n]=$!
    nginx -c "$work/ng-$n-client.conf" & pids+=($!); cpid[$n]=$!
    wait_port "$sport"; wait_port "$cport"
    port[$n]=$cport; inner[$n]=$sport
}

cat >tool.py <<'PY'
import socket, struct, sys, threading, time
def get(s):
    # One whole HTTP response (Content-Length framing).
    buf, need = b"", None
    while need is None or len(buf) < need:
        d = s.recv(65536)
        if not d: raise SystemExit("connection closed early")
        buf += d
        if need is None and b"\r\n\r\n" in buf:
            head = buf.split(b"\r\n\r\n")[0]
            cl = [l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
            need = len(head) + 4 + int(cl[0])
def hold(port, n, path, ready):
    # n keep-alive connections through the pair, one request each, then held open.
    conns = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()); get(s); conns.append(s)
    open(ready, "w").write("ready\n")
    time.sleep(3600)
def resumption(port, inner, n):
    # Sniff the TLS hop while n new connections go through the pair; count the
    # ClientHellos and those offering a PSK (pre_shared_key, extension 41).
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(3))
    raw.bind(("lo", 0)); raw.settimeout(0.2)
    seen = {"hello": 0, "psk": 0}; stop = []
    def sniff():
        while not stop:
            try: pkt, addr = raw.recvfrom(65600)
            except socket.timeout: continue
            if addr[2] != 0 or pkt[12:14] != b"\x08\x00": continue  # incoming IPv4 only (lo shows each packet twice)
            ip = pkt[14:]; ihl = (ip[0] & 15) * 4
            if ip[9] != 6: continue
            tcp = ip[ihl:]
            if struct.unpack("!H", tcp[2:4])[0] != inner: continue
            p = tcp[(tcp[12] >> 4) * 4:]
            if len(p) < 6 or p[0] != 0x16 or p[5] != 1: continue
            seen["hello"] += 1
            i = 9 + 2 + 32; i += 1 + p[i]; i += 2 + struct.unpack("!H", p[i:i+2])[0]; i += 1 + p[i]
            end = i + 2 + struct.unpack("!H", p[i:i+2])[0]; i += 2
            while i + 4 <= end:
                t, l = struct.unpack("!HH", p[i:i+4])
                if t == 41: seen["psk"] += 1
                i += 4 + l
    th = threading.Thread(target=sniff); th.start()
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"); get(s); s.close()
    time.sleep(0.5); stop.append(1); th.join()
    print(f"{seen['hello']} ClientHellos, {seen['psk']} offering a PSK")
if sys.argv[1] == "hold": hold(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
else: resumption(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
PY

round=0
echo "== idle RSS after start (VmRSS KiB, of which anonymous; client side / server side of the http pair)"
for peer in $PEERS; do
    for kind in http bulk; do "start_$peer" "$kind"; done
    [ "$peer" = plain ] && continue
    sleep 0.5
    c=${cpid[$peer-http]} s=${spid[$peer-http]}
    printf '%-13s %6s (anon %5s) / %6s (anon %5s)\n' "$peer" "$(rss_kib "$c")" "$(anon_kib "$c")" "$(rss_kib "$s")" "$(anon_kib "$s")"
    record "$peer" rss_idle_client "$(rss_kib "$c")"; record "$peer" rss_idle_server "$(rss_kib "$s")"
    record "$peer" anon_idle_client "$(anon_kib "$c")"; record "$peer" anon_idle_server "$(anon_kib "$s")"
    idle_c[$peer]=$(rss_kib "$c"); idle_s[$peer]=$(rss_kib "$s")
done

echo "== session resumption check: 50 new connections through each http pair, ClientHellos seen on the TLS hop"
for peer in $PEERS; do
    [ "$peer" = plain ] && continue
    printf '%-13s %s\n' "$peer" "$(python3 tool.py resume "${port[$peer-http]}" "${inner[$peer-http]}" 50)"
done

# Memory per open connection: CONNS keep-alive connections held open through
# the http pair, first each after one small request (6-byte body), then (new
# connections) each after a 256 KiB response, so that relay buffers have been
# filled once. Per connection: (RSS with CONNS open - RSS idle after start) / CONNS.
for variant in small big; do
    path=/; [ $variant = big ] && path=/big
    echo "== memory per open connection: $CONNS idle keep-alive connections through the http pair after one GET $path ((RSS - idle RSS) ÷ $CONNS)"
    for peer in $PEERS; do
        [ "$peer" = plain ] && continue
        c=${cpid[$peer-http]} s=${spid[$peer-http]}
        c0=${idle_c[$peer]} s0=${idle_s[$peer]}
        rm -f held
        python3 tool.py hold "${port[$peer-http]}" "$CONNS" "$path" held & hp=$!; pids+=($hp)
        for _ in $(seq 1200); do [ -e held ] && break; kill -0 $hp 2>/dev/null || break; sleep 0.05; done
        sleep 0.5
        if [ -e held ]; then
            c1=$(rss_kib "$c") s1=$(rss_kib "$s")
            cb=$(( (c1 - c0) * 1024 / CONNS )) sb=$(( (s1 - s0) * 1024 / CONNS ))
            printf '%-13s client %6s → %6s KiB (%5s B/conn)   server %6s → %6s KiB (%5s B/conn)\n' "$peer" "$c0" "$c1" "$cb" "$s0" "$s1" "$sb"
            record "$peer" "rss_conn_${variant}_client" "$cb"; record "$peer" "rss_conn_${variant}_server" "$sb"
        else
            printf '%-13s failed to hold %s connections\n' "$peer" "$CONNS"
        fi
        kill $hp 2>/dev/null || true; wait $hp 2>/dev/null || true
        sleep 1
done
done

wrk_run() { # peer metric-prefix extra-args...
    local peer=$1 pre=$2; shift 2
    local procs=() c0 c1 n
    [ "$peer" = plain ] || procs=("${cpid[$peer-http]}" "${spid[$peer-http]}")
    c0=$(cpu_ticks "${procs[@]}")
    wrk -t2 -c16 -d"${DURATION}s" --latency "$@" "http://127.0.0.1:${port[$peer-http]}/" >wrk.out 2>&1 || true
    c1=$(cpu_ticks "${procs[@]}")
    n=$(awk '/requests in/ {print $1}' wrk.out); n=${n:-0}
    local rps=$(awk '/Requests\/sec/ {print $2}' wrk.out) p50=$(awk '$1=="50%" {print $2}' wrk.out) p99=$(awk '$1=="99%" {print $2}' wrk.out)
    local us=-
    [ "$peer" = plain ] || us=$(awk -v t=$((c1 - c0)) -v hz="$hz" -v n="$n" 'BEGIN {printf "%.1f", n ? t * 1e6 / hz / n : 0}')
    printf '%-13s %9s req/s  p50 %8s  p99 %8s  pair CPU %6s µs/req  %s\n' "$peer" "$rps" "$p50" "$p99" "$us" \
        "$(awk '/Socket errors|Non-2xx/ {print}' wrk.out | tr '\n' ' ')"
    record "$peer" "${pre}_rps" "$rps"; record "$peer" "${pre}_p50" "$p50"; record "$peer" "${pre}_p99" "$p99"
    [ "$us" = - ] || record "$peer" "${pre}_cpu_us" "$us"
}
for round in $(seq "$ROUNDS"); do
    # Even rounds run the peers in reverse order, so that drift in the
    # machine's load does not always favour the same peer.
    order=$PEERS; [ $((round % 2)) = 0 ] && order=$(printf '%s\n' $PEERS | tac | xargs)
    echo "== round $round/$ROUNDS ($order), load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "-- keep-alive HTTP (wrk, 16 connections, ${DURATION}s)"
    for peer in $order; do wrk_run "$peer" ka; done
    echo "-- new connection and full handshake per request (wrk -H 'Connection: close', 16 concurrent, ${DURATION}s)"
    for peer in $order; do wrk_run "$peer" nc -H "Connection: close"; done
    echo "-- bulk (iperf3, one stream, ${DURATION}s)"
    for peer in $order; do
        procs=(); [ "$peer" = plain ] || procs=("${cpid[$peer-bulk]}" "${spid[$peer-bulk]}")
        c0=$(cpu_ticks "${procs[@]}")
        read -r gb g < <(iperf3 -c 127.0.0.1 -p "${port[$peer-bulk]}" -t "$DURATION" -f g 2>&1 | awk '/receiver/ {v = $5; if ($6 ~ /^K/) v /= 1048576; else if ($6 ~ /^M/) v /= 1024; print v, $7}') || true
        c1=$(cpu_ticks "${procs[@]}")
        msgb=-; [ "$peer" = plain ] || msgb=$(awk -v t=$((c1 - c0)) -v hz="$hz" -v gb="${gb:-0}" 'BEGIN {printf "%.0f", gb ? t * 1000 / hz / gb : 0}')
        printf '%-13s %5s Gbit/s  pair CPU %5s ms/GiB\n' "$peer" "$g" "$msgb"
        record "$peer" bulk_gbps "$g"; [ "$msgb" = - ] || record "$peer" bulk_cpu_ms_gb "$msgb"
    done
done
echo "== RSS after the runs (KiB; client / server side of the http pair)"
for peer in $PEERS; do
    [ "$peer" = plain ] && continue
    printf '%-13s %6s / %6s\n' "$peer" "$(rss_kib "${cpid[$peer-http]}")" "$(rss_kib "${spid[$peer-http]}")"
done

echo "== summary (median of $ROUNDS round(s)); ratios against the best of stunnel, haproxy, nginx"
python3 - "$results" <<'PY'
import sys, statistics, collections
v = collections.defaultdict(list)
for line in open(sys.argv[1]):
    r, peer, m, x = line.rstrip("\n").split("\t")
    if not x: continue
    if x.endswith("ms"): x = float(x[:-2])
    elif x.endswith("us"): x = float(x[:-2]) / 1000
    elif x.endswith("s"): x = float(x[:-1]) * 1000
    else: x = float(x)
    v[(peer, m)].append(x)
peers = []
for (p, _m) in v:
    if p not in peers: peers.append(p)
med = lambda p, m: statistics.median(v[(p, m)]) if v.get((p, m)) else None
rows = [("keep-alive req/s", "ka_rps", "{:,.0f}", max), ("keep-alive p50 ms", "ka_p50", "{:.2f}", min),
        ("keep-alive p99 ms", "ka_p99", "{:.2f}", min), ("keep-alive pair CPU µs/req", "ka_cpu_us", "{:.0f}", min),
        ("new conn/s (full handshakes)", "nc_rps", "{:,.0f}", max), ("new conn p50 ms", "nc_p50", "{:.2f}", min),
        ("new conn p99 ms", "nc_p99", "{:.2f}", min), ("new conn pair CPU ms/conn", "nc_cpu_us", "{:.2f}", min),
        ("bulk Gbit/s", "bulk_gbps", "{:.2f}", max), ("bulk pair CPU ms/GiB", "bulk_cpu_ms_gb", "{:.0f}", min),
        ("idle RSS MiB client/server", "rss_idle", None, None), ("… of which anonymous", "anon_idle", None, None),
        ("RSS per open conn KiB, after a small GET", "rss_conn_small", None, None),
        ("RSS per open conn KiB, after a 256 KiB GET", "rss_conn_big", None, None)]
print("| load | " + " | ".join(peers) + " |")
print("|---|" + "---:|" * len(peers))
for label, m, fmt, _ in rows:
    cells = []
    for p in peers:
        if m.startswith("rss_") or m.startswith("anon_"):
            a, b = med(p, m + "_client"), med(p, m + "_server")
            cells.append("" if a is None or b is None else f"{a/1024:.1f} / {b/1024:.1f}")
        else:
            x = med(p, m)
            if x is not None and m == "nc_cpu_us": x /= 1000
            cells.append("" if x is None else fmt.format(x))
    print(f"| {label} | " + " | ".join(cells) + " |")
others = [p for p in ("stunnel", "haproxy", "nginx") if p in peers]
def best(m, f):
    xs = [(med(p, m), p) for p in others if med(p, m) is not None]
    return f(xs) if xs else (None, None)
print()
for t in ("tessera", "tessera-bare"):
    if t not in peers or not others: continue
    out = []
    for label, m, f in (("keep-alive req/s", "ka_rps", max), ("keep-alive p99", "ka_p99", min),
                        ("new conn/s", "nc_rps", max), ("CPU/new conn", "nc_cpu_us", min), ("bulk", "bulk_gbps", max),
                        ("bulk CPU/GiB", "bulk_cpu_ms_gb", min)):
        b, bp = best(m, f)
        if b and med(t, m) is not None: out.append(f"{label} {med(t, m)/b:.2f}× {bp}")
    print(f"{t}: " + "; ".join(out))
if "tessera" in peers and "tessera-bare" in peers:
    print("tessera / tessera-bare: " + "; ".join(
        f"{l} {med('tessera', m)/med('tessera-bare', m):.3f}" for l, m in
        (("keep-alive req/s", "ka_rps"), ("new conn/s", "nc_rps"), ("keep-alive CPU/req", "ka_cpu_us"), ("CPU/new conn", "nc_cpu_us"))
        if med("tessera", m) and med("tessera-bare", m)))
PY
