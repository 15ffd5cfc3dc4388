"""files-client builds as a wheel of its own (`uv build --package files-client`) that
carries the package, its type marker and its dependencies, and works on its own."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _uv() -> str:
    found = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    if not Path(found).exists():
        pytest.fail("uv is needed to build the wheel (make setup installs it)")
    return found


def test_the_client_builds_as_a_wheel_of_its_own(tmp_path: Path) -> None:
    built = subprocess.run(
        [_uv(), "build", "--package", "files-client", "--wheel", "-o", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("files_client-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(archive.read(n).decode() for n in names if n.endswith("METADATA"))
    assert {"files_client/__init__.py", "files_client/cli.py", "files_client/py.typed"} <= names
    assert not any(n.startswith(("shared/", "services/", "tests/")) for n in names)
    for dependency in ("httpx", "pydantic", "tqdm"):
        assert f"Requires-Dist: {dependency}" in metadata
    # Imported from the wheel (ahead of the workspace's copy on the path).
    env = {"PYTHONPATH": str(wheel), "PATH": "/usr/bin:/bin"}
    where = subprocess.run(
        [sys.executable, "-c", "import files_client; print(files_client.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(wheel)), where.stdout
    usage = subprocess.run(
        [sys.executable, "-m", "files_client", "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert usage.returncode == 0 and "upload" in usage.stdout, usage.stderr
