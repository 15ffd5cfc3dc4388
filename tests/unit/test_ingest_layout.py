"""Ingest is split by capability, and its packages import in one direction (README, "How
it is built"): these keep it so as it changes."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INGEST = ROOT / "services" / "ingest"
PACKAGE = "services.ingest"

# What each part of ingest may import of ingest besides itself; `app` composes them all.
MAY_IMPORT = {
    "answers": set(),
    "content": set(),
    "media": set(),
    "jobs": {"answers"},
    "collector": {"answers"},
    # The catalog's metadata schema as ingest follows it, and metadata's rules.
    "metadata": set(),
    "uploads": {"answers", "media", "jobs", "collector", "metadata"},
    # A completed session's file is recorded as an upload's: its domain, nothing more;
    # its metadata is checked as an upload's.
    "sessions": {"answers", "media", "jobs", "collector", "uploads.domain", "metadata"},
    "imports": {"answers", "media", "jobs", "collector", "metadata"},
    # Cancelling a job ends a session, or an import (told through a callable).
    "cancel": {"answers", "jobs", "sessions"},
    # Webhooks go out through integrations' address rule and its resolver.
    "webhooks": {"answers", "imports.egress", "imports.domain.endpoints", "imports.buckets.s3"},
}
# Pure rules: no I/O, nothing but other rules, contracts and the API's models.
PURE_MAY_IMPORT = (
    "shared.contracts",
    "shared.api",
    "shared.kit.errors",
    "shared.kit.access",
    "pydantic",
)
IO_LIBRARIES = ("asyncpg", "fastapi", "httpx", "aiohttp", "botocore", "av", "PIL")


def modules() -> list[Path]:
    return sorted(INGEST.rglob("*.py"))


def imported(source: Path) -> set[str]:
    """Every module a source imports, with `from x import y` as both x and x.y."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def part_of(source: Path) -> str:
    return source.relative_to(INGEST).with_suffix("").parts[0]


def is_pure(source: Path) -> bool:
    parts = source.relative_to(INGEST).with_suffix("").parts
    return "domain" in parts or parts == ("media", "kinds")


def test_no_module_is_over_500_lines_unless_it_says_why() -> None:
    for source in modules():
        text = source.read_text()
        if text.count("\n") > 500:
            assert "lines because" in text, f"{source.relative_to(ROOT)} is over 500 lines"


def test_the_capabilities_import_in_one_direction() -> None:
    for source in modules():
        part = part_of(source)
        if part in ("app", "__main__", "__init__"):
            continue
        allowed = MAY_IMPORT[part] | {part}
        for name in imported(source):
            if not name.startswith(f"{PACKAGE}."):
                continue
            inner = name.removeprefix(f"{PACKAGE}.")
            if inner.split(".")[0] == part:
                continue
            assert any(inner == a or inner.startswith(f"{a}.") for a in allowed) or any(
                a.startswith(f"{inner}.") for a in allowed
            ), f"{source.relative_to(ROOT)} imports {name}"


def test_the_domains_are_pure() -> None:
    pure = [s for s in modules() if is_pure(s)]
    assert len(pure) >= 8, [str(p) for p in pure]
    for source in pure:
        for name in imported(source):
            top = name.split(".")[0]
            assert top not in IO_LIBRARIES, f"{source.relative_to(ROOT)} imports {name}"
            if name.startswith("shared."):
                assert name.startswith(PURE_MAY_IMPORT), f"{source.relative_to(ROOT)}: {name}"
            if name.startswith(f"{PACKAGE}."):
                parts = name.split(".")
                assert "domain" in parts or parts[2:4] == ["media", "kinds"], (
                    f"{source.relative_to(ROOT)} imports {name}"
                )
