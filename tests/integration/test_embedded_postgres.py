"""The embedded PostgreSQL takes only its generated password, and only over loopback."""

from __future__ import annotations

import signal
import stat
from pathlib import Path

import asyncpg
import psutil
import pytest

from shared.kit import db
from shared.kit.embedded import Child, password_file, start_postgres


def _pgdata(child: Child) -> Path:
    args = child.proc.args
    assert isinstance(args, list)
    return Path(args[args.index("-D") + 1])


def _without_password(url: str) -> str:
    user, _, rest = url.removeprefix("postgresql://").partition("@")
    return f"postgresql://{user.partition(':')[0]}@{rest}"


def _with_password(url: str, password: str) -> str:
    user, _, rest = url.removeprefix("postgresql://").partition("@")
    return f"postgresql://{user.partition(':')[0]}:{password}@{rest}"


async def _refused(url: str) -> None:
    with pytest.raises(asyncpg.InvalidPasswordError):
        conn = await db.connect(url)
        await conn.close()


async def test_only_the_generated_password_opens_it(postgres: Child) -> None:
    pgdata = _pgdata(postgres)
    kept = password_file(pgdata)
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    password = kept.read_text().strip()
    assert len(password) >= 22 and f":{password}@" in postgres.url

    conn = await db.connect(postgres.url)
    assert await conn.fetchval("SHOW password_encryption") == "scram-sha-256"
    await conn.close()
    await _refused(_without_password(postgres.url))
    await _refused(_with_password(postgres.url, "postgres"))

    rules = [
        line.split()
        for line in (pgdata / "pg_hba.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules and all(rule[-1] == "scram-sha-256" for rule in rules)
    assert {tuple(rule[:1]) + tuple(rule[3:4]) for rule in rules if rule[0] == "host"} == {
        ("host", "127.0.0.1/32")
    }


def test_it_listens_on_loopback_only(postgres: Child) -> None:
    listening = {
        c.laddr.ip
        for c in psutil.Process(postgres.proc.pid).net_connections("tcp")
        if c.status == psutil.CONN_LISTEN
    }
    assert listening == {"127.0.0.1"}


async def test_a_cluster_made_before_passwords_gets_one(tmp_path: Path) -> None:
    """A data dir from before (trust authentication, no password file) is given a
    password and password-only rules at its next start."""
    pgdata = tmp_path / "pg"
    first = start_postgres(pgdata, durable=False)
    first.stop(signal.SIGINT)
    (pgdata / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
    password_file(pgdata).unlink()

    again = start_postgres(pgdata, durable=False)
    try:
        assert password_file(pgdata).exists()
        conn = await db.connect(again.url)
        await conn.close()
        await _refused(_with_password(again.url, first.url.split(":")[2].split("@")[0]))
        await _refused(_without_password(again.url))
    finally:
        again.stop(signal.SIGINT)
