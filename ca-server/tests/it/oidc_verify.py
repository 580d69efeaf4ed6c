"""Verifies a Tessera JWT-SVID with PyJWT using only the OIDC discovery
document and the JWKS it names, as any OIDC relying party would.

usage: oidc_verify.py ISSUER PORT CA_PEM AUDIENCE TOKEN TAMPERED

The issuer's host name resolves to 127.0.0.1:PORT (as /etc/hosts would map
it); TLS is verified against CA_PEM for that host name.
"""
import json
import socket
import ssl
import sys
import urllib.parse
import urllib.request

import jwt

issuer, port, ca_pem, audience, token, tampered = sys.argv[1:7]
host = urllib.parse.urlsplit(issuer).hostname
real_getaddrinfo = socket.getaddrinfo


def getaddrinfo(h, p, *a, **kw):
    if h == host:
        return real_getaddrinfo("127.0.0.1", int(port), *a, **kw)
    return real_getaddrinfo(h, p, *a, **kw)


socket.getaddrinfo = getaddrinfo
ctx = ssl.create_default_context(cafile=ca_pem)


def get(url):
    with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
        assert r.headers.get_content_type() == "application/json", r.headers
        return json.load(r)


doc = get(issuer.rstrip("/") + "/.well-known/openid-configuration")
assert doc["issuer"] == issuer, doc
jwks = jwt.PyJWKSet.from_dict(get(doc["jwks_uri"]))
kid = jwt.get_unverified_header(token)["kid"]
key = next(k for k in jwks.keys if k.key_id == kid)
assert key.public_key_use == "sig" and key.algorithm_name == "ES256"
claims = jwt.decode(token, key.key, algorithms=["ES256"], audience=audience, issuer=issuer)
assert claims["sub"].startswith("spiffe://"), claims
try:
    jwt.decode(tampered, key.key, algorithms=["ES256"], audience=audience, issuer=issuer)
except jwt.InvalidSignatureError:
    pass
else:
    sys.exit("tampered token verified")
print("verified " + claims["sub"])
