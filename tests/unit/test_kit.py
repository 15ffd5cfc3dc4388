"""Pure pieces of the kit and the gateway's routing."""

from __future__ import annotations

import ast
import asyncio
import pathlib

import pytest

from services.gateway.edge import route
from shared.contracts import REGISTRY
from shared.kit import consistency

ROOT = pathlib.Path(__file__).parents[2]


def test_consistency_tokens_round_trip_and_merge() -> None:
    token = consistency.encode({"ingest": 4, "catalog": 12})
    assert consistency.decode(token) == {"ingest": 4, "catalog": 12}
    assert consistency.merge({"a": 1, "b": 5}, {"a": 3}) == {"a": 3, "b": 5}


@pytest.mark.parametrize("bad", ["ingest", "ingest:x", ":3", "in-gest:3"])
def test_malformed_tokens_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="malformed"):
        consistency.decode(bad)


@pytest.mark.parametrize(
    ("method", "path", "service"),
    [
        ("POST", "/v1/folders", "catalog"),
        ("POST", "/v1/folders/x/files", "ingest"),
        ("POST", "/v1/folders/x/dicom", "ingest"),
        ("GET", "/v1/folders/x/dicom", "catalog"),
        ("GET", "/v1/folders/x/items", "catalog"),
        ("GET", "/v1/jobs/x", "ingest"),
        ("GET", "/v1/users/me", "acl"),
        ("POST", "/v1/move", "catalog"),
        ("GET", "/v1/nothing", None),
    ],
)
def test_gateway_routes_each_path_to_its_owner(method: str, path: str, service: str) -> None:
    assert route(path, method) == service


def test_event_types_are_stable_names_not_import_paths() -> None:
    for name, event in REGISTRY.items():
        context, _, kind = name.partition(".")
        contexts = {"catalog", "ingest", "dicom", "datasets", "acl", "thumbnails"}
        assert context in contexts and kind[0].isupper()
        assert event.type == name


def test_services_do_not_import_each_other() -> None:
    for service in (ROOT / "services").iterdir():
        if not service.is_dir() or service.name.startswith("_"):
            continue
        for source in service.rglob("*.py"):
            tree = ast.parse(source.read_text())
            for node in ast.walk(tree):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else []
                )
                for name in names:
                    if name.startswith("services."):
                        assert name.split(".")[1] == service.name, (
                            f"{source.relative_to(ROOT)} imports {name}"
                        )


async def test_a_wait_wakes_when_the_watermark_moves_and_gives_up_at_its_deadline() -> None:
    marks = {"ingest": 3}
    moved = consistency.Signal()

    async def watermarks() -> dict[str, int]:
        return dict(marks)

    waiting = asyncio.create_task(
        consistency.wait_until_caught_up(watermarks, {"ingest": 5}, 5.0, moved)
    )
    done, _ = await asyncio.wait({waiting}, timeout=0.05)
    assert not done  # still behind
    marks["ingest"] = 5
    moved.fire()
    assert await asyncio.wait_for(waiting, 1.0) is True
    assert await consistency.wait_until_caught_up(watermarks, {"ingest": 9}, 0.05, moved) is False
