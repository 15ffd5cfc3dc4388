"""What a caller sees while part of the platform is away: a clear 503, never a 500 or a
dropped connection, and the platform whole again once the launcher has restarted it."""

from __future__ import annotations

import signal

import httpx

from shared.kit.stack import Stack
from tests.conftest import eventually
from tests.e2e.support import error


async def test_a_service_that_dies_answers_503_until_the_launcher_has_it_back(
    api: httpx.AsyncClient, stack: Stack
) -> None:
    datasets = stack.child("datasets")
    datasets.proc.send_signal(signal.SIGKILL)
    datasets.proc.wait()
    seen: set[int] = set()

    async def back() -> bool:
        answer = await api.get("/v1/datasets")
        seen.add(answer.status_code)
        if answer.status_code == 503:
            error(answer, 503, "unavailable")
            assert answer.headers["Retry-After"]
        return answer.status_code == 200

    await eventually(back, within=120, what="the datasets service back")
    assert seen == {503, 200}
    assert [name for name, _, _ in stack.exits if name == "datasets"]
