"""The official MCP Python SDK against `medicodax mcp`, the stdio bridge, launched as a
subprocess: the client signs nothing; the bridge holds the agent key.

Two bridges: one acting for a user the agent may act for (a call that succeeds), one for
a user it may not (a call that is denied). Receipts are checked with PyJWT against the
gateway's JWKS over the result text. Prints one JSON report line for the Rust test.
"""

from __future__ import annotations

import json

from mcp import Client, StdioServerParameters

from common import RECEIPT_META_KEY, Receipts, arguments, check, check_tools, meta_of, problem, record, run_main, success


def bridge(args, user: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=args.medicodax,
        args=["mcp", "--agent", args.agent, "--key", args.key, "--as", user, "--gateway", args.gateway, "--audience", args.audience],
        env={"MEDICODAX_LOG": "info"},
    )


async def main() -> None:
    args = arguments("medicodax")
    receipts = Receipts(args.gateway)
    report: list = []

    for mode in ["auto", "legacy"]:
        async with Client(bridge(args, args.user), mode=mode) as client:
            want = "2026-07-28" if mode == "auto" else "2025-11-25"
            check(client.protocol_version == want, f"bridge {mode}: negotiated {client.protocol_version}")
            check(client.server_info is not None and client.server_info.name == "medicodax-mcp-bridge", f"bridge {mode}: server {client.server_info}")
            check_tools(await client.list_tools(), f"bridge {mode} tools/list")
            r = await client.call_tool("connections.list", {})
            text = success(r, f"bridge {mode} connections.list")
            names = sorted(c["name"] for c in r.structured_content["connections"])
            check(names == ["ecw-sandbox", "epic-sandbox"], f"bridge {mode}: connections {names}")
            claims = receipts.verify(meta_of(r)[RECEIPT_META_KEY], text)
            check(claims["decision"] == "allowed", f"bridge {mode}: {claims}")
            record(report, f"bridge-{mode}:allowed", claims, tool="connections.list", user=args.user, channel="http")

            call_args = {"connection": "ecw-sandbox", "type": "Patient", "params": [["gender", "female"], ["birthdate", "ge1900"]], "max_results": 1}
            r = await client.call_tool("fhir.search", call_args)
            text = success(r, f"bridge {mode} fhir.search")
            check(len(r.structured_content["resources"]) == 1, f"bridge {mode}: {r.structured_content}")
            claims = receipts.verify(meta_of(r)[RECEIPT_META_KEY], text)
            record(report, f"bridge-{mode}:search", claims, tool="fhir.search", user=args.user, channel="http")

    async with Client(bridge(args, "mallory")) as client:
        r = await client.call_tool("connections.list", {})
        problem(r, "bridge acting for mallory", 403, "denied")
        claims = receipts.verify(meta_of(r)[RECEIPT_META_KEY], r.content[0].text)
        check(claims["decision"] == "denied", f"bridge denied: {claims}")
        record(report, "bridge:denied", claims, tool="connections.list", user="mallory", channel="http")

    print(json.dumps({"calls": report}))


if __name__ == "__main__":
    run_main(main)
