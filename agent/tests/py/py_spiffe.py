"""Drives py-spiffe (gRPC C-core) against a Tessera agent; prints one JSON
object of what it saw for the Rust test (agent/tests/stock_clients.rs) to
check. Usage: py_spiffe.py SOCKET_PATH AUDIENCE [SUBJECT] [--rotation]."""

import base64
import json
import sys
import threading

from cryptography.hazmat.primitives.serialization import Encoding
from spiffe import WorkloadApiClient
from spiffe._proto import workload_pb2
from spiffe.errors import PySpiffeError
from spiffe.spiffe_id.spiffe_id import SpiffeId

socket, audience = sys.argv[1], sys.argv[2]
rest = sys.argv[3:]
rotation = "--rotation" in rest
rest = [a for a in rest if a != "--rotation"]
subject = rest[0] if rest else None
out = {}


def error(f):
    """The error a call raised, as text (None when it succeeded)."""
    try:
        f()
    except PySpiffeError as e:
        return str(e)
    return None


def serial(svid):
    return format(svid.leaf.serial_number, "x")


with WorkloadApiClient(socket_path="unix://" + socket, default_timeout=20) as client:
    ctx = client.fetch_x509_context()
    out["x509"] = [
        {
            "spiffe_id": str(s.spiffe_id),
            "leaf": base64.b64encode(s.leaf.public_bytes(Encoding.DER)).decode(),
            "serial": serial(s),
        }
        for s in ctx.x509_svids
    ]
    out["default"] = str(ctx.default_svid.spiffe_id)
    out["x509_bundles"] = sorted(
        str(b.trust_domain) for b in ctx.x509_bundle_set.bundles
    )
    # py-spiffe's objects do not carry the hint; read it from the messages
    # (same channel, same C-core stack, same security header).
    stub = client._spiffe_workload_api_stub
    first = next(iter(stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), timeout=20)))
    out["x509_hints"] = [[s.spiffe_id, s.hint] for s in first.svids]
    jwts = stub.FetchJWTSVID(workload_pb2.JWTSVIDRequest(audience=[audience]), timeout=20)
    out["jwt_hints"] = [[s.spiffe_id, s.hint] for s in jwts.svids]

    jwt = client.fetch_jwt_svid(audience={audience})
    out["jwt"] = {"spiffe_id": str(jwt.spiffe_id), "token": jwt.token}
    checked = client.validate_jwt_svid(jwt.token, audience)
    out["validated"] = str(checked.spiffe_id)
    out["wrong_audience"] = error(lambda: client.validate_jwt_svid(jwt.token, "wrong-" + audience))
    if subject is not None:
        picked = error(lambda: out.update(
            subject=str(client.fetch_jwt_svid(audience={audience}, subject=SpiffeId(subject)).spiffe_id)))
        out["subject_error"] = picked
    bundles = client.fetch_jwt_bundles()
    out["jwt_bundles"] = {
        str(b.trust_domain): sorted(b.jwt_authorities.keys()) for b in bundles.bundles
    }

    if rotation:
        # A new SVID pushed on the open stream (renewal at half-life).
        seen = []
        done = threading.Event()
        errors = []

        def on_success(c):
            seen.append(serial(c.default_svid))
            if len(set(seen)) > 1:
                done.set()

        def on_error(e):
            errors.append(str(e))
            done.set()

        handle = client.stream_x509_contexts(on_success, on_error, retry_connect=False)
        done.wait(70)
        handle.cancel()
        out["rotation"] = {"serials": seen, "errors": errors}

print(json.dumps(out))
