"""The 3-step remediation of `cargo xtask bench` as a Prefect 3 flow.

The same three HTTP calls as opsgate's 3-step runbook (look, act, look
again) against the same kind of loopback target, as three `@task`s of one
`@flow`, run one flow run after another. Prefect runs as it does by default
when no server is configured: a temporary local API server that this
process starts, with its state under `PREFECT_HOME`.

Usage: python prefect_flow.py TARGET_URL RUNS WARM_UP
Prints one line `prefect-bench {"took_ms": [...]}`: each measured flow run,
called → returned, in milliseconds (the warm-up runs are left out).
"""

import json
import sys
import time

import httpx
from prefect import flow, task

client = httpx.Client(timeout=30)


@task
def look(target: str) -> dict:
    return client.get(f"{target}/check").raise_for_status().json()


@task
def act(target: str) -> dict:
    return client.post(f"{target}/act").raise_for_status().json()


@task
def look_again(target: str) -> dict:
    return client.get(f"{target}/verify").raise_for_status().json()


@flow
def remediate(target: str) -> None:
    look(target)
    act(target)
    look_again(target)


def main() -> None:
    target, runs, warm_up = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    took_ms = []
    for index in range(warm_up + runs):
        started = time.perf_counter()
        remediate(target)
        elapsed = (time.perf_counter() - started) * 1000
        if index >= warm_up:
            took_ms.append(elapsed)
        print(f"prefect flow run {index + 1}/{warm_up + runs}", file=sys.stderr, flush=True)
    print("prefect-bench " + json.dumps({"took_ms": took_ms}), flush=True)


if __name__ == "__main__":
    main()
