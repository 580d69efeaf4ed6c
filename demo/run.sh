#!/usr/bin/env bash
# The Tessera demo, all on loopback: a CA, a small HTTP service "api" behind
# sidecar B, a client "web" behind sidecar A (allowed), and a client "intruder"
# behind sidecar C (valid certificate, not allowed). Shows an allowed call, a
# denied call with its fleet-wide denial record, and a revocation taking effect.
#   demo/run.sh
# Every process it starts is awaited by the line it prints once it listens
# (all bind port 0 and say which port they got), never by a pause.
# TESSERA_DEMO_BIN=<dir> uses the binaries in <dir> instead of building them
# (the test suite runs the demo with its own build).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${TESSERA_DEMO_BIN:-}" ]; then
    bin="$TESSERA_DEMO_BIN"
else
    cargo build --release -q --bin tessera-ca --bin tessera --bin tessera-sidecar
    bin="$PWD/target/release"
fi
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"
# wait_for FILE PATTERN: until a line of FILE (a process's output) matches
# PATTERN; fails after 30 s, or at once when the process writing it is gone.
wait_for() {
    local pid=${3:-${pids[-1]}}
    for _ in $(seq 600); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || { grep -q "$2" "$1" 2>/dev/null && return 0; echo "process $pid exited before '$2' appeared in $1" >&2; cat "$1" >&2; exit 1; }
        sleep 0.05
    done
    echo "timed out waiting for $2 in $1" >&2; cat "$1" >&2; exit 1
}
# listener_port SIDECAR KIND NAME: the port a sidecar's listener bound (its
# first stdout line lists them once they listen).
listener_port() { python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["tessera_sidecar"][sys.argv[2]][sys.argv[3]].rsplit(":",1)[1])' "$1.out" "$2" "$3"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
export PATH="$bin:$PATH"

step "start the CA (SQLite, self-created root)"
TESSERA_LOG=warn tessera-ca --listen 127.0.0.1:0 >ca.out 2>ca.err & pids+=($!)
wait_for ca.out listening
cat ca.out
tessera ca status

step "register three workloads"
for w in api web intruder; do
    tessera entry create --spiffe-id "spiffe://example.org/$w" --selector "demo:$w" >/dev/null
    tessera token create --spiffe-id "spiffe://example.org/$w" >"$w.token"
    echo "spiffe://example.org/$w: entry and single-use join token created"
done

step "start the api service (python http.server) and its sidecar B (allows only web)"
mkdir -p site && echo "hello from api" >site/index.html
python3 -u -m http.server 0 --bind 127.0.0.1 --directory site >api.log 2>&1 & pids+=($!)
wait_for api.log 'Serving HTTP on .* port [0-9]'
api_port=$(sed -n 's/^Serving HTTP on .* port \([0-9]*\).*/\1/p' api.log | head -1)
sidecar() { # name token-file listeners...
    local name=$1 token=$2; shift 2
    printf 'ca_url = "%s"\nca_bundle = "%s"\nadmin_listen = "127.0.0.1:0"\n[denials]\nflush_ms = 500\n%s\n' \
        "$(sed -n 's/^server = "\(.*\)"/\1/p' data/admin/cli.toml)" "$PWD/data/admin/bundle.pem" "$*" >"$name.toml"
    TESSERA_JOIN_TOKEN=$(cat "$token") TESSERA_LOG=info tessera-sidecar --config "$name.toml" >"$name.out" 2>"$name.err" & pids+=($!)
    wait_for "$name.err" ' ready'
    wait_for "$name.out" tessera_sidecar
}
sidecar b api.token "[[inbound]]
name = \"api\"
listen = \"127.0.0.1:0\"
forward = \"127.0.0.1:$api_port\"
allow = [\"spiffe://example.org/web\"]"
b_port=$(listener_port b inbound api); b_pid=${pids[-1]}
out() { printf '[[outbound]]\nname = "api"\nlisten = "127.0.0.1:0"\nupstream = "127.0.0.1:%s"\nserver_id = "spiffe://example.org/api"\n' "$b_port"; }
sidecar a web.token "$(out)"
sidecar c intruder.token "$(out)"
a_port=$(listener_port a outbound api); c_port=$(listener_port c outbound api)
echo "sidecars ready: web -> 127.0.0.1:$a_port, intruder -> 127.0.0.1:$c_port, api behind 127.0.0.1:$b_port"

step "web calls api through its sidecar (plaintext in, mTLS between sidecars)"
curl -sS --max-time 5 "http://127.0.0.1:$a_port/"

step "intruder calls api: refused by B's policy"
curl -sS --max-time 5 "http://127.0.0.1:$c_port/" || echo "(connection refused by the api's sidecar, as it should be)"
wait_for b.err 'connection denied' "$b_pid"
grep 'connection denied' b.err | tail -1
# B reports its denials in batches (flush_ms = 500): ask the CA until it lists it.
for i in $(seq 100); do
    tessera denials list >denials.txt 2>&1 && grep -q 'spiffe://example.org/intruder' denials.txt && break
    [ "$i" = 100 ] && { echo "the CA never listed the denial" >&2; cat denials.txt >&2; exit 1; }
    sleep 0.1
done
cat denials.txt

step "revoke web: its next call is refused within seconds"
serial=$(tessera cert list --spiffe-id spiffe://example.org/web --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["serial"])')
tessera cert revoke --serial "$serial" --reason key_compromise
# B follows the revocation feed (a long poll): once it logs the revocation,
# web's next call is refused.
wait_for b.err 'revocations received' "$b_pid"
if curl -s --max-time 5 -o /dev/null "http://127.0.0.1:$a_port/"; then
    echo "web was served after its revocation" >&2; exit 1
fi
echo "web refused after revocation"
wait_for b.err 'reason="revoked"' "$b_pid"
grep -E 'revoked' b.err | tail -1
echo
echo "demo done"
