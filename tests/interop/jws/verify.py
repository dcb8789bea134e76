"""Checks every kind of JWS MEDICODAX emits with two Python JOSE libraries, PyJWT and
jwcrypto: signature against the gateway's published JWKS (key chosen by kid), algorithm
allow-list RS384/ES384, and the expected typ. Each token is also tampered with (one
payload character changed) and must then be rejected by both.

stdin: {"jwks": {...}, "tokens": [{"name": "...", "typ": "...", "jws": "..."}, ...]}
stdout: one JSON array, per token {"name", "pyjwt", "jwcrypto", "pyjwt_rejects_tampered",
"jwcrypto_rejects_tampered"} (true/false, or an error string where a check failed).
"""

import json
import sys

import jwt
from jwcrypto import jwk as cjwk
from jwcrypto import jws as cjws

req = json.load(sys.stdin)
pyjwks = jwt.PyJWKSet.from_dict(req["jwks"])
cset = cjwk.JWKSet.from_json(json.dumps(req["jwks"]))


def tamper(token):
    h, p, s = token.split(".")
    i = len(p) // 2
    c = "A" if p[i] != "A" else "B"
    return ".".join([h, p[:i] + c + p[i + 1:], s])


def pyjwt_ok(token, typ):
    try:
        header = jwt.get_unverified_header(token)
        if header.get("typ") != typ:
            return f"typ {header.get('typ')!r}"
        key = pyjwks[header["kid"]]
        jwt.api_jws.decode_complete(token, key=key.key, algorithms=["RS384", "ES384"])
        return True
    except Exception as e:  # a verdict, reported back
        return f"{type(e).__name__}: {e}"


def jwcrypto_ok(token, typ):
    try:
        obj = cjws.JWS()
        obj.deserialize(token)
        header = obj.jose_header
        if header.get("typ") != typ:
            return f"typ {header.get('typ')!r}"
        key = cset.get_key(header["kid"])
        if key is None:
            return "unknown kid"
        obj.allowed_algs = ["RS384", "ES384"]
        obj.verify(key)
        return True
    except Exception as e:
        return f"{type(e).__name__}: {e}"


out = []
for t in req["tokens"]:
    bad = tamper(t["jws"])
    out.append({
        "name": t["name"],
        "pyjwt": pyjwt_ok(t["jws"], t["typ"]),
        "jwcrypto": jwcrypto_ok(t["jws"], t["typ"]),
        "pyjwt_rejects_tampered": pyjwt_ok(bad, t["typ"]) is not True,
        "jwcrypto_rejects_tampered": jwcrypto_ok(bad, t["typ"]) is not True,
    })
print(json.dumps(out))
