"""Secrets at rest: AES-256-GCM with a key derived from FILES_SECRET_KEY.

A sealed value is `v1.<base64url(nonce || ciphertext+tag)>`. The associated data binds
it to what it belongs to (an integration's id), so a sealed value copied onto another
record does not open. Without FILES_SECRET_KEY (the local platform, the tests), the
key material is made once in `<data dir>/secret.key`, readable by its owner only.
Nothing here logs or returns a secret in an error.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = "v1"
NONCE_SIZE = 12
KEY_FILE = "secret.key"


class SealError(Exception):
    """A sealed value that does not open: another key, another record, or tampered."""


def key_material(secret_key: str, data_dir: Path) -> bytes:
    """FILES_SECRET_KEY, or the key file of the data dir (made now if missing, 0600)."""
    if secret_key:
        return secret_key.encode()
    path = data_dir / KEY_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48) + "\n")
    material = path.read_text().strip()
    if not material:
        raise SealError(f"{path} is empty: delete it to make a new key, or set FILES_SECRET_KEY")
    return material.encode()


class Sealer:
    def __init__(self, material: bytes) -> None:
        if not material:
            raise SealError("no key material")
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"files secrets v1"
        ).derive(material)
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, bound_to: str) -> str:
        nonce = os.urandom(NONCE_SIZE)
        sealed = nonce + self._aead.encrypt(nonce, plaintext, bound_to.encode())
        return f"{VERSION}.{base64.urlsafe_b64encode(sealed).decode()}"

    def open(self, token: str, bound_to: str) -> bytes:
        version, _, body = token.partition(".")
        if version != VERSION:
            raise SealError("not a sealed value of a known version")
        try:
            raw = base64.urlsafe_b64decode(body.encode())
        except ValueError as error:
            raise SealError("not a sealed value") from error
        if len(raw) <= NONCE_SIZE:
            raise SealError("not a sealed value")
        try:
            return self._aead.decrypt(raw[:NONCE_SIZE], raw[NONCE_SIZE:], bound_to.encode())
        except InvalidTag:
            raise SealError(
                "the sealed value does not open with this key (was FILES_SECRET_KEY changed?)"
            ) from None


def derive(material: bytes, purpose: str) -> bytes:
    """A key of its own for one purpose (e.g. signing URLs), from the same material."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=f"files {purpose} v1".encode()
    ).derive(material)
