"""Secrets at rest: sealed with AES-GCM, open only with the same key and record."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from shared.kit.audit import redact
from shared.kit.secrets import Sealer, SealError, key_material


def test_a_sealed_secret_opens_with_the_same_key_and_record() -> None:
    sealer = Sealer(b"one key")
    token = sealer.seal(b'{"secret_key": "s3cr3t"}', "integration-1")
    assert "s3cr3t" not in token
    assert token.startswith("v1.")
    assert sealer.open(token, "integration-1") == b'{"secret_key": "s3cr3t"}'
    # Each seal has its own nonce: the same secret never seals twice alike.
    assert sealer.seal(b"x", "r") != sealer.seal(b"x", "r")


def test_another_key_or_record_or_a_changed_byte_does_not_open() -> None:
    token = Sealer(b"one key").seal(b"secret", "integration-1")
    with pytest.raises(SealError):
        Sealer(b"another key").open(token, "integration-1")
    with pytest.raises(SealError):
        Sealer(b"one key").open(token, "integration-2")
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with pytest.raises(SealError):
        Sealer(b"one key").open(tampered, "integration-1")
    for garbage in ("", "v1.", "v2.abc", "v1.!!!"):
        with pytest.raises(SealError):
            Sealer(b"one key").open(garbage, "integration-1")


def test_the_key_comes_from_the_setting_or_a_private_file_made_once(tmp_path: Path) -> None:
    assert key_material("from the environment", tmp_path) == b"from the environment"
    assert not (tmp_path / "secret.key").exists()
    first = key_material("", tmp_path)
    assert stat.S_IMODE((tmp_path / "secret.key").stat().st_mode) == 0o600
    assert key_material("", tmp_path) == first
    assert len(first) >= 32


def test_the_audit_drops_sealed_and_secret_fields() -> None:
    data = {"name": "n", "sealed_credentials": "v1.xxx", "nested": {"secret_key": "s"}}
    assert redact(data) == {"name": "n", "nested": {}}
