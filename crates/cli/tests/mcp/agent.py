"""An AI agent's side of MCP, driven by the official Python SDK (`mcp`).

The Rust test `mcp::the_python_sdk_drives_the_tools_*` starts opsgate and
runs this script against it, over streamable HTTP (`--url`) or over stdio
through `opsgate mcp` (`--stdio`), in the SDK's modern mode (2026-07-28) or
its legacy one (2025-11-25, with the initialize handshake). It calls every
tool the way an agent would and prints one JSON document of what it was
answered; the test judges that document and the server's own records.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client


def result(answer) -> dict:
    """A tool's answer as plain data: its structured content, and whether
    it is an error."""
    return {
        "is_error": bool(answer.is_error),
        "content": answer.structured_content,
    }


def proposal(runbook: str, inputs: dict, key: str, confidence: float) -> dict:
    return {
        "runbook": runbook,
        "inputs": inputs,
        "rationale": f"{runbook} fixes what the ticket describes",
        "evidence": [{"kind": "log", "text": "service entered the stopped state"}],
        "confidence": confidence,
        "model": {"name": "agent-sdk-test", "version": "1"},
        "prompt_version": "v1",
        "idempotency_key": key,
    }


async def drive(client: Client, prefix: str) -> dict:
    said: dict = {}
    tools = await client.list_tools()
    said["tools"] = {
        tool.name: {
            "read_only": tool.annotations.read_only_hint if tool.annotations else None,
            "destructive": tool.annotations.destructive_hint if tool.annotations else None,
            "idempotent": tool.annotations.idempotent_hint if tool.annotations else None,
        }
        for tool in tools.tools
    }
    said["list_runbooks"] = result(await client.call_tool("list_runbooks", {}))
    said["describe_runbook"] = result(
        await client.call_tool("describe_runbook", {"runbook": "restart-service"})
    )
    restart = proposal(
        "restart-service", {"device": "LT-7", "service": "spooler"}, f"{prefix}-auto", 0.92
    )
    said["dry_run"] = result(await client.call_tool("dry_run_proposal", restart))
    said["propose_auto"] = result(await client.call_tool("propose", restart))
    said["propose_again"] = result(await client.call_tool("propose", restart))
    said["propose_approval"] = result(
        await client.call_tool(
            "propose", proposal("recycle-web", {"server": "WEB-01"}, f"{prefix}-approval", 0.9)
        )
    )
    said["propose_unsure"] = result(
        await client.call_tool(
            "propose",
            proposal(
                "restart-service", {"device": "LT-7", "service": "spooler"}, f"{prefix}-unsure", 0.3
            ),
        )
    )
    said["propose_out_of_scope"] = result(
        await client.call_tool(
            "propose", proposal("wipe-disk", {"device": "LT-7"}, f"{prefix}-wipe", 0.99)
        )
    )
    auto_run = (said["propose_auto"]["content"] or {}).get("run_id")
    said["run_status"] = result(await client.call_tool("run_status", {"run_id": auto_run}))
    unsure_run = (said["propose_unsure"]["content"] or {}).get("run_id")
    said["explain"] = result(await client.call_tool("explain_decision", {"run_id": unsure_run}))
    # There is no tool that approves; asking for one is an error.
    try:
        approve = await client.call_tool(
            "approve_run", {"run_id": (said["propose_approval"]["content"] or {}).get("run_id")}
        )
        said["approve"] = {"raised": None, **result(approve)}
    except Exception as error:  # the SDK raises the JSON-RPC error
        said["approve"] = {"raised": str(error)}
    return said


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", help="opsgate's /mcp, over streamable HTTP")
    parser.add_argument("--stdio", help="the opsgate binary, to run `opsgate mcp`")
    parser.add_argument("--server", help="with --stdio: the server `opsgate mcp` relays to")
    parser.add_argument("--token", required=True)
    parser.add_argument("--mode", default="auto", help="auto (2026-07-28) or legacy (2025-11-25)")
    parser.add_argument("--prefix", required=True, help="idempotency keys start with it")
    args = parser.parse_args()

    if args.stdio:
        server = StdioServerParameters(
            command=args.stdio,
            args=["mcp"],
            env={"OPSGATE_SERVER": args.server, "OPSGATE_TOKEN": args.token},
        )
        async with Client(server, mode=args.mode) as client:
            said = await drive(client, args.prefix)
    else:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {args.token}"}, timeout=30)
        async with http:
            transport = streamable_http_client(args.url, http_client=http)
            async with Client(transport, mode=args.mode) as client:
                said = await drive(client, args.prefix)
    json.dump(said, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
