#!/usr/bin/env bash
# The Tessera demo, all on loopback: a CA, a small HTTP service "api" behind
# sidecar B, a client "web" behind sidecar A (allowed), and a client "intruder"
# behind sidecar C (valid certificate, not allowed). Shows an allowed call, a
# denied call with its fleet-wide denial record, and a revocation taking effect.
#   demo/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q --bin tessera-ca --bin tessera --bin tessera-sidecar
bin="$PWD/target/release"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done; echo "timed out waiting for $2 in $1" >&2; cat "$1" >&2; exit 1; }
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
api_port=$(free_port); b_port=$(free_port); a_port=$(free_port); c_port=$(free_port)
python3 -m http.server "$api_port" --bind 127.0.0.1 --directory site >api.log 2>&1 & pids+=($!)
sidecar() { # name token-file listeners...
    local name=$1 token=$2; shift 2
    printf 'ca_url = "%s"\nca_bundle = "%s"\nadmin_listen = "127.0.0.1:0"\n[denials]\nflush_ms = 500\n%s\n' \
        "$(sed -n 's/^server = "\(.*\)"/\1/p' data/admin/cli.toml)" "$PWD/data/admin/bundle.pem" "$*" >"$name.toml"
    TESSERA_JOIN_TOKEN=$(cat "$token") TESSERA_LOG=info tessera-sidecar --config "$name.toml" >"$name.out" 2>"$name.err" & pids+=($!)
    wait_for "$name.err" ' ready'
}
sidecar b api.token "[[inbound]]
name = \"api\"
listen = \"127.0.0.1:$b_port\"
forward = \"127.0.0.1:$api_port\"
allow = [\"spiffe://example.org/web\"]"
out() { printf '[[outbound]]\nname = "api"\nlisten = "127.0.0.1:%s"\nupstream = "127.0.0.1:%s"\nserver_id = "spiffe://example.org/api"\n' "$1" "$b_port"; }
sidecar a web.token "$(out "$a_port")"
sidecar c intruder.token "$(out "$c_port")"
echo "sidecars ready: web -> 127.0.0.1:$a_port, intruder -> 127.0.0.1:$c_port, api behind 127.0.0.1:$b_port"

step "web calls api through its sidecar (plaintext in, mTLS between sidecars)"
curl -sS --max-time 5 "http://127.0.0.1:$a_port/"

step "intruder calls api: refused by B's policy"
curl -sS --max-time 5 "http://127.0.0.1:$c_port/" || echo "(connection refused by the api's sidecar, as it should be)"
grep 'connection denied' b.err | tail -1
sleep 1 # let B's next report reach the CA
tessera denials list

step "revoke web: its next call is refused within seconds"
serial=$(tessera cert list --spiffe-id spiffe://example.org/web --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["serial"])')
tessera cert revoke --serial "$serial" --reason key_compromise
for i in $(seq 50); do
    if ! curl -s --max-time 2 -o /dev/null "http://127.0.0.1:$a_port/"; then
        echo "web refused after revocation (attempt $i)"; break
    fi
    sleep 0.1
done
grep -E 'revoked' b.err | tail -1
echo
echo "demo done"
