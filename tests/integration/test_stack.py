"""The launcher: a piece that cannot start fails the start, naming its log (the tests'
fixtures rely on it), rather than being started again for ever."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.kit.embedded import free_port
from shared.kit.settings import Settings
from shared.kit.stack import Stack
from tests.conftest import ADMIN_KEY


@pytest.mark.timeout(300)  # five Python processes start (and die) side by side
def test_a_service_that_dies_at_start_fails_the_start_naming_its_log(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        # Nothing listens there: every service dies while it starts.
        database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        http_port=free_port(),
        bootstrap_admin_key=ADMIN_KEY,
    )
    stack = Stack(settings)
    try:
        with pytest.raises(RuntimeError, match=r"exited with status \d+; see .*/logs/\w+\.log"):
            stack.start(timeout=280)
    finally:
        stack.stop()
    assert not stack.children
