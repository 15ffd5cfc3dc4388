"""Event contracts evolve additively: their JSON schemas are pinned in a snapshot.

A change that only adds optional fields updates the snapshot
(`FILES_UPDATE_SNAPSHOTS=1 make test`); a breaking change needs a new event type.
"""

from __future__ import annotations

import json
import os
import pathlib

from shared.contracts import REGISTRY

SNAPSHOT = pathlib.Path(__file__).with_name("contracts.snapshot.json")


def schemas() -> dict[str, object]:
    return {
        name: {"version": event.version, "schema": event.model_json_schema()}
        for name, event in sorted(REGISTRY.items())
    }


def test_event_schemas_match_the_snapshot() -> None:
    current = schemas()
    if os.environ.get("FILES_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    pinned = json.loads(SNAPSHOT.read_text())
    assert set(pinned) <= set(current), f"event types removed: {set(pinned) - set(current)}"
    for name, was in pinned.items():
        now = current[name]
        required_before = set(was["schema"].get("required", []))
        required_now = set(now["schema"].get("required", []))  # type: ignore[index]
        assert required_now <= required_before, f"{name} gained required fields"
        assert set(was["schema"]["properties"]) <= set(now["schema"]["properties"]), (  # type: ignore[index]
            f"{name} lost fields"
        )
    assert pinned == json.loads(json.dumps(current)), (
        "contracts changed additively: refresh with FILES_UPDATE_SNAPSHOTS=1"
    )
