"""A worker for tests/integration/test_isolated.py: does what each call says."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from shared.kit import isolated
from shared.kit.isolated import ReadAt, Refusal


def work(request: dict[str, Any], read_at: ReadAt) -> bytes:
    do = request["do"]
    if do == "echo":
        return json.dumps({**request, "pid": os.getpid()}).encode()
    if do == "read":
        return b"".join(read_at(offset, length) for offset, length in request["ranges"])
    if do == "env":
        return json.dumps(dict(os.environ)).encode()
    if do == "hang":
        time.sleep(3600)
    if do == "die":
        os._exit(3)
    if do == "print":
        print("a decoder's chatter", flush=True)
        sys.stdout.flush()
        os.write(1, b"\x00\x00\x00\x00 written to fd 1")
        return b"ok"
    if do == "eof":
        raise EOFError("a decoder's input ended early")  # as PyAV's av.error.EOFError
    if do == "refuse":
        raise Refusal(422, "cannot_render", "this slice cannot be rendered")
    if do == "huge":
        return b"x" * request["bytes"]
    raise ValueError(f"unknown {do!r}")


if __name__ == "__main__":
    isolated.serve(work)
