"""Where the client finds its platform: arguments, then FILES_URL and FILES_API_KEY,
then the file `files login` wrote (`$XDG_CONFIG_HOME/files/config.json`, or
`~/.config/files/config.json`; mode 0600, as it holds a key)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from files_client.errors import FilesError


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "files" / "config.json"


def state_dir() -> Path:
    """Where the command keeps what lets an interrupted upload resume."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "files"


def load() -> dict[str, str]:
    try:
        found = json.loads(config_path().read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise FilesError("bad_config", f"{config_path()}: {error}") from error
    return {k: str(v) for k, v in found.items() if k in ("url", "api_key")}


def save(url: str, api_key: str) -> Path:
    """Write the URL and key, readable by the user alone (0600, directory 0700)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "api_key": api_key}, f)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def resolve(url: str | None, api_key: str | None) -> tuple[str, str]:
    """The platform's URL and the key to use: given, else from the environment, else
    from the saved login."""
    saved: dict[str, str] | None = None
    if not url:
        url = os.environ.get("FILES_URL") or None
    if not api_key:
        api_key = os.environ.get("FILES_API_KEY") or None
    if not url or not api_key:
        saved = load()
        url = url or saved.get("url")
        api_key = api_key or saved.get("api_key")
    if not url:
        raise FilesError(
            "not_configured", "no platform: set FILES_URL (and FILES_API_KEY) or run `files login`"
        )
    if not api_key:
        raise FilesError("not_configured", "no API key: set FILES_API_KEY or run `files login`")
    return url.rstrip("/"), api_key
