"""Shared by the MCP interop scripts: signing calls with PyJWT, checking receipts with
PyJWT against the gateway's JWKS, and the checks every tools/call result must pass.

Nothing here comes from MEDICODAX: the JWS, the RFC 7638 key id and the receipt check
are PyJWT and the standard library, so passing them is interop evidence.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import sys
import time
import urllib.request
import uuid

import jsonschema
import jwt
from jwt.algorithms import RSAAlgorithm
from cryptography.hazmat.primitives.serialization import load_pem_private_key

CALL_META_KEY = "io.medicodax/call"
RECEIPT_META_KEY = "io.medicodax/receipt"
STATUS_META_KEY = "io.medicodax/status"
TOOLS = ["fhir.read", "fhir.search", "encounter.bundle", "connections.list", "worksheet.submit"]


def fail(msg: str) -> None:
    raise AssertionError(msg)


def check(cond: bool, msg: str) -> None:
    if not cond:
        fail(msg)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Signer:
    """Signs calls for one agent with PyJWT (RS384), kid = RFC 7638 thumbprint."""

    def __init__(self, agent: str, key_pem: str, audience: str):
        with open(key_pem, "rb") as f:
            pem = f.read()
        self.key = load_pem_private_key(pem, password=None)
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        members = {"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}
        self.kid = b64url(hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode()).digest())
        self.agent = agent
        self.audience = audience

    def sign(self, sub: str, tool: str, args: dict) -> tuple[str, str]:
        now = int(time.time())
        jti = str(uuid.uuid4())
        claims = {"iss": self.agent, "sub": sub, "aud": self.audience, "iat": now, "exp": now + 120,
                  "jti": jti, "tool": tool, "args": args}
        token = jwt.encode(claims, self.key, algorithm="RS384", headers={"typ": "medicodax-call+jwt", "kid": self.kid})
        return token, jti


class Receipts:
    """Checks receipts with PyJWT against the gateway's published JWKS."""

    def __init__(self, gateway: str):
        with urllib.request.urlopen(f"{gateway}/.well-known/jwks.json", timeout=10) as r:
            self.jwks = jwt.PyJWKSet.from_dict(json.load(r))

    def verify(self, receipt: str, text: str, call_jws: str | None = None) -> dict:
        header = jwt.get_unverified_header(receipt)
        check(header.get("typ") == "medicodax-receipt+jwt", f"receipt typ {header.get('typ')!r}")
        key = next((k for k in self.jwks.keys if k.key_id == header.get("kid")), None)
        check(key is not None, "the receipt's kid is not in the gateway's JWKS")
        claims = jwt.decode(receipt, key.key, algorithms=["RS384", "ES384"], options={"verify_aud": False, "require": ["call_jti", "call_hash", "result_hash", "decision", "seq"]})
        check(claims["result_hash"] == hashlib.sha256(text.encode()).hexdigest(), "result_hash is not the SHA-256 of the result text")
        if call_jws is not None:
            check(claims["call_hash"] == hashlib.sha256(call_jws.encode()).hexdigest(), "call_hash is not the SHA-256 of the call sent")
        # A tampered receipt must not verify.
        head, payload, sig = receipt.split(".")
        forged = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        forged["decision"] = "allowed" if forged["decision"] != "allowed" else "denied"
        tampered = f"{head}.{b64url(json.dumps(forged).encode())}.{sig}"
        try:
            jwt.decode(tampered, key.key, algorithms=["RS384", "ES384"], options={"verify_aud": False})
            fail("a tampered receipt verified")
        except jwt.InvalidSignatureError:
            pass
        return claims


def check_tools(listing, label: str) -> list[str]:
    """The listing offers exactly the gateway's tools, each with a usable JSON Schema."""
    names = [t.name for t in listing.tools]
    check(names == TOOLS, f"{label}: tools {names}")
    for t in listing.tools:
        check(bool(t.description), f"{label}: {t.name} has no description")
        jsonschema.Draft202012Validator.check_schema(t.input_schema)
    schemas = {t.name: t.input_schema for t in listing.tools}
    good = {"connection": "epic-sandbox", "type": "Patient", "id": "abc-1"}
    jsonschema.validate(good, schemas["fhir.read"])
    for bad in [{"connection": "epic-sandbox", "type": "Nope", "id": "abc"}, {"connection": "x", "type": "Patient", "id": "a/b"}, {"type": "Patient", "id": "a"}, {**good, "extra": 1}]:
        try:
            jsonschema.validate(bad, schemas["fhir.read"])
            fail(f"{label}: the fhir.read schema accepts {bad}")
        except jsonschema.ValidationError:
            pass
    jsonschema.validate({"connection": "epic-sandbox", "type": "Condition", "params": [["patient", "p"]], "max_results": 5}, schemas["fhir.search"])
    jsonschema.validate({}, schemas["connections.list"])
    return names


def text_of(result) -> str:
    check(len(result.content) == 1 and result.content[0].type == "text", f"one text content item: {result.content}")
    return result.content[0].text


def meta_of(result) -> dict:
    return dict(result.meta or {})


def success(result, label: str) -> str:
    text = text_of(result)
    check(not result.is_error, f"{label}: isError: {text[:300]}")
    check(result.structured_content == json.loads(text), f"{label}: structuredContent is not the parsed text")
    check(meta_of(result).get(STATUS_META_KEY) == 200, f"{label}: status {meta_of(result)}")
    return text


def problem(result, label: str, status: int, code: str) -> dict:
    text = text_of(result)
    check(result.is_error, f"{label}: expected an error result, got {text[:300]}")
    check(result.structured_content is None, f"{label}: an error has no structuredContent")
    p = json.loads(text)
    check((p.get("status"), p.get("code")) == (status, code), f"{label}: problem {p}")
    check(p.get("type") == f"/v1/problems/{code}", f"{label}: problem type {p.get('type')}")
    check(meta_of(result).get(STATUS_META_KEY) == status, f"{label}: status meta {meta_of(result)}")
    return p


def record(report: list, label: str, claims: dict | None, **extra) -> None:
    entry = {"label": label, **extra}
    if claims is not None:
        entry.update({"jti": claims["call_jti"], "seq": claims["seq"], "decision": claims["decision"]})
    report.append(entry)


def arguments(*extra: str) -> argparse.Namespace:
    """The command line both scripts take (`extra` adds required options)."""
    ap = argparse.ArgumentParser()
    for name in ("gateway", "audience", "agent", "key", "user", *extra):
        ap.add_argument(f"--{name}", required=True)
    return ap.parse_args()


def run_main(main) -> None:
    """Runs `main()`; a failed check exits 1 with its message on stderr."""
    try:
        asyncio.run(main())
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
