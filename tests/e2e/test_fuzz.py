"""A property-based fuzzer driven by `/openapi.json` (schemathesis), over every route:
examples, boundary cases, random valid and invalid input, and stateful sequences that
follow the document's links (a folder made, then read, changed, uploaded into,
deleted). It asserts no 5xx, no dropped connection, and that every answer is one the
document allows (status, content type, schema).

`make test` runs it bounded (FILES_FUZZ_EXAMPLES per operation, a fixed seed);
`make fuzz` runs it longer. Two callers, each made for the run, so that nothing
another test relies on can be touched:

- a member, over every route: it sees only what it makes itself;
- an org admin, over the routes only an org admin gets past (users, keys, audit,
  integrations, webhooks).

The bounded run leaves out coverage cases that send nothing new to the gateway's code
(`make fuzz` sends them all): the member's coverage phase on the admin's routes (the
admin's run sends every one of them, and gets past the refusal the member meets; the
member's examples and fuzzing still meet it: its coverage cases there, which reach the
owning services' checks as a member's, are the one trade of coverage for time), an
unexpected method other than OPTIONS and TRACE (the route table's one 405 for any method
a path lacks; OPTIONS a method the cookie check takes as safe, TRACE one it does not),
and a path parameter or token the gateway refuses before routing sent to every route
(tests/e2e/fuzz_hooks.py).

Three routes are never fuzzed. `POST /v1/integrations`: registering one makes ingest
connect to the endpoint given (or to AWS when none is), and this machine sends
traffic nowhere but to itself; `POST /v1/webhooks` likewise (ingest resolves the
URL's host, then posts events to it). `DELETE /v1/keys/{key_id}`: following the document's
links, a caller finds its own key (`/v1/users/me`, then its keys) and revokes it,
and the rest of the run is 401; the admin could revoke the platform's first admin's
key, which the other tests use. Both are covered by their own tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.kit.stack import Stack
from tests.e2e.support import member

EXAMPLES = int(os.environ.get("FILES_FUZZ_EXAMPLES", "4"))
SEED = int(os.environ.get("FILES_FUZZ_SEED", "20261202"))
MAX_TIME_S = int(os.environ.get("FILES_FUZZ_MAX_TIME_S", "0"))
# A bounded run takes a few minutes on a busy machine; `make fuzz`, as long as it needs.
BOUNDED = EXAMPLES <= 20 and not MAX_TIME_S
TIMEOUT_S = 900 if BOUNDED else 6 * 3600
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    )
)
ROOT = Path(__file__).resolve().parents[2]
ADMIN_ONLY = r"^/v1/(users|integrations|audit|webhooks)"
# What the bounded run's coverage phase leaves out (the module's docstring says why).
TRIM = """
[phases.coverage]
unexpected-methods = ["options", "trace"]
"""
ADMINS_COVERAGE = f"""
[[operations]]
include-path-regex = {json.dumps(ADMIN_ONLY)}
phases.coverage.enabled = false
"""


def fuzz(stack: Stack, key: str, tmp: Path, *filters: str, admins_run_covers: bool = False) -> None:
    report = tmp / "report"
    config = tmp / "fuzz.toml"
    config.write_text((TRIM + (ADMINS_COVERAGE if admins_run_covers else "")) if BOUNDED else "")
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "run",
        f"{stack.gateway_url}/openapi.json",
        "--header",
        f"Authorization: Bearer {key}",
        "--checks",
        CHECKS,
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--request-timeout",
        "60",
        "--suppress-health-check",
        "all",
        "--exclude-operation-id",
        "post_integrations",
        "--exclude-operation-id",
        "post_webhooks",
        "--exclude-operation-id",
        "delete_keys_key_id",
        "--report",
        "ndjson",
        "--report-dir",
        str(report),
        *filters,
    ]
    if MAX_TIME_S:
        command += ["--max-time", str(MAX_TIME_S)]
    hooks = {
        "SCHEMATHESIS_HOOKS": "tests.e2e.fuzz_hooks",
        "PYTHONPATH": str(ROOT),
        "FILES_FUZZ_TRIM": "1" if BOUNDED else "0",
    }
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
        cwd=tmp,
        env={**os.environ, **hooks},
    )  # in tmp: schemathesis keeps a cache in its working directory
    output = done.stdout + done.stderr
    (tmp / "schemathesis.log").write_text(output)
    assert done.returncode == 0, output[-20_000:]


@pytest.mark.timeout(TIMEOUT_S)
async def test_fuzz_as_a_member_over_every_route(
    api: httpx.AsyncClient, platform: Stack, tmp_path: Path
) -> None:
    someone: dict[str, Any] = await member(api, "fuzzer")
    fuzz(platform, someone["api_key"], tmp_path, admins_run_covers=True)


@pytest.mark.timeout(TIMEOUT_S)
async def test_fuzz_as_an_org_admin_over_what_only_admins_may_do(
    api: httpx.AsyncClient, platform: Stack, tmp_path: Path
) -> None:
    made = await api.post(
        "/v1/users",
        json={"email": f"fuzz-admin-{SEED}-{os.getpid()}@example.com", "name": "Fuzz admin",
              "org_role": "admin"},
    )  # fmt: skip
    assert made.status_code == 201, made.text
    fuzz(
        platform,
        made.json()["api_key"],
        tmp_path,
        "--include-path-regex",
        ADMIN_ONLY,
    )
