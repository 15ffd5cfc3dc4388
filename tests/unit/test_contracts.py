"""Event contracts evolve additively: their JSON schemas are pinned in a snapshot.

A change that only adds optional fields updates the snapshot
(`FILES_UPDATE_SNAPSHOTS=1 make test`). A change of shape raises the contract's version
and registers an upcaster from the version before (shared/contracts/upcasting.py), so
every stored event still reads; otherwise it needs a new event type.
"""

from __future__ import annotations

import json
import os
import pathlib

from shared.contracts import REGISTRY
from shared.contracts.upcasting import STEPS

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
        if now["version"] != was["version"]:  # type: ignore[index]
            for version in range(was["version"], now["version"]):  # type: ignore[index]
                assert (name, version) in STEPS, f"{name}: no upcaster from version {version}"
            continue
        assert required_now <= required_before, f"{name} gained required fields"
        assert set(was["schema"]["properties"]) <= set(now["schema"]["properties"]), (  # type: ignore[index]
            f"{name} lost fields"
        )
    assert pinned == json.loads(json.dumps(current)), (
        "contracts changed additively: refresh with FILES_UPDATE_SNAPSHOTS=1"
    )


def test_a_new_envelope_equals_a_validated_one() -> None:
    import uuid

    from shared.contracts import catalog as ev
    from shared.contracts.envelope import Cause, Envelope, new_envelope

    event = ev.FileDeleted(file_id=uuid.uuid4(), folder_id=uuid.uuid4(), blob_key="k", sha256="s")
    cause = Cause(actor="someone", correlation_id="c", causation_id="e", traceparent="t")
    built = new_envelope(event, stream_id="file-x", stream_version=2, cause=cause)
    validated = Envelope.model_validate(built.model_dump())
    assert built == validated
    assert built.model_dump_json() == validated.model_dump_json()
    moved = built.model_copy(update={"source": "catalog", "position": 7})
    assert (moved.source, moved.position, moved.data) == ("catalog", 7, built.data)
