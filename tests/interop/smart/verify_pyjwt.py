"""Verifies MEDICODAX client assertions against our published JWKS with PyJWT.

stdin: {"jwks": {...}, "audience": "...", "issuer": "...", "tokens": ["...", ...]}
stdout: one JSON array, per token {"ok": true, "header": {...}, "claims": {...}} or
{"ok": false, "error": "..."}. The key is chosen by kid from the JWKS; the algorithm
allow-list is explicit (RS384, ES384); iss, sub, aud, exp, iat and jti are required.
"""

import json
import sys

import jwt

req = json.load(sys.stdin)
jwks = jwt.PyJWKSet.from_dict(req["jwks"])
out = []
for token in req["tokens"]:
    try:
        header = jwt.get_unverified_header(token)
        key = jwks[header["kid"]]
        claims = jwt.decode(
            token,
            key=key.key,
            algorithms=["RS384", "ES384"],
            audience=req["audience"],
            issuer=req["issuer"],
            options={"require": ["iss", "sub", "aud", "exp", "iat", "jti"]},
        )
        out.append({"ok": True, "header": header, "claims": claims})
    except Exception as e:  # every failure is a verdict, reported back to the test
        out.append({"ok": False, "error": f"{type(e).__name__}: {e}"})
print(json.dumps(out))
