"""The official MCP Python SDK against the gateway's streamable-HTTP endpoint `/mcp`.

This client signs its own calls (PyJWT, RS384) and puts each in
`params._meta["io.medicodax/call"]`. Run once per connection mode: `auto` (the SDK's
default: `server/discover`, the 2026-07-28 protocol) and `legacy` (the `initialize`
handshake). Prints one JSON report line: the calls made, with the `jti`, `seq` and
decision of each receipt, for the Rust test to find in the audit log.
"""

from __future__ import annotations

import json

from mcp import Client

from common import (CALL_META_KEY, RECEIPT_META_KEY, Receipts, Signer, arguments, check, check_tools, meta_of, problem,
                    record, run_main, success)


async def run(mode: str, args, signer: Signer, receipts: Receipts, report: list) -> None:
    async with Client(f"{args.gateway}/mcp", mode=mode) as client:
        want = "2026-07-28" if mode == "auto" else "2025-11-25"
        check(client.protocol_version == want, f"{mode}: negotiated {client.protocol_version}")
        check(client.server_info is not None and client.server_info.name == "medicodax-gateway", f"{mode}: server {client.server_info}")
        check_tools(await client.list_tools(), f"{mode} tools/list")

        # A call that succeeds, with real EHR data.
        call_args = {"connection": "epic-sandbox", "type": "Patient", "params": [["gender", "male"], ["birthdate", "ge1900"]], "max_results": 2}
        jws, jti = signer.sign(args.user, "fhir.search", call_args)
        r = await client.call_tool("fhir.search", call_args, meta={CALL_META_KEY: jws})
        text = success(r, f"{mode} fhir.search")
        resources = r.structured_content["resources"]
        check(len(resources) == 2 and all(p["resourceType"] == "Patient" and p["gender"] == "male" for p in resources), f"{mode}: {resources}")
        check(all("telecom" not in p and "address" not in p for p in resources), f"{mode}: the coder role's redaction applies")
        claims = receipts.verify(meta_of(r)[RECEIPT_META_KEY], text, jws)
        check((claims["call_jti"], claims["decision"]) == (jti, "allowed"), f"{mode}: receipt {claims}")
        record(report, f"{mode}:allowed", claims, tool="fhir.search", user=args.user, channel="mcp")

        # Denied: the agent may not act for this user (the uniform 403, with a receipt).
        jws, jti = signer.sign("mallory", "connections.list", {})
        r = await client.call_tool("connections.list", {}, meta={CALL_META_KEY: jws})
        problem(r, f"{mode} acting for mallory", 403, "denied")
        claims = receipts.verify(meta_of(r)[RECEIPT_META_KEY], r.content[0].text, jws)
        check(claims["decision"] == "denied", f"{mode}: {claims}")
        record(report, f"{mode}:denied", claims, tool="connections.list", user="mallory", channel="mcp")

        # Denied: arguments that are not the signed args (audited as bad-arguments).
        jws, jti = signer.sign(args.user, "connections.list", {})
        r = await client.call_tool("connections.list", {"connection": "epic-sandbox"}, meta={CALL_META_KEY: jws})
        problem(r, f"{mode} args mismatch", 400, "bad-arguments")
        claims = receipts.verify(meta_of(r)[RECEIPT_META_KEY], r.content[0].text, jws)
        record(report, f"{mode}:mismatch", claims, tool="connections.list", user=args.user, channel="mcp")

        # No signed call: an error, no receipt, nothing audited.
        r = await client.call_tool("connections.list", {})
        problem(r, f"{mode} unsigned", 401, "invalid-call")
        check(RECEIPT_META_KEY not in meta_of(r), f"{mode}: an unsigned call got a receipt")
        r = await client.call_tool("connections.list", {}, meta={CALL_META_KEY: "not.a.jws"})
        problem(r, f"{mode} garbage", 401, "invalid-call")
        check(RECEIPT_META_KEY not in meta_of(r), f"{mode}: a garbage call got a receipt")
        record(report, f"{mode}:unsigned", None)


async def main() -> None:
    args = arguments()
    signer = Signer(args.agent, args.key, args.audience)
    receipts = Receipts(args.gateway)
    report: list = []
    for mode in ["auto", "legacy"]:
        await run(mode, args, signer, receipts, report)
    print(json.dumps({"calls": report}))


if __name__ == "__main__":
    run_main(main)
