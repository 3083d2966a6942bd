"""The state directory: anonymous id, the user's persisted choice, the one-time notice.

Every file here is private to the user: the directory is 0700 and files are 0600.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

ID_FILE = "distinct_id"
CHOICE_FILE = "telemetry"  # "enabled" | "disabled", written by `otel-spawn enable|disable`
NOTICE_FILE = "notice-shown"


def ensure_home(home: Path) -> Path:
    """Create the state directory (0700) if needed and return it."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(home, 0o700)
    return home


def write_private(path: Path, text: str) -> None:
    """Atomically replace `path` with `text`, readable by the user only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def distinct_id(home: Path) -> str:
    """The persistent anonymous id, created once and shared by every process of the app.

    Creation is race-free: the id is written to a private temp file and hard-linked into place,
    which fails if another process got there first; then everybody reads the one file.
    """
    path = home / ID_FILE
    with contextlib.suppress(OSError, ValueError):
        return str(uuid.UUID(path.read_text(encoding="utf-8").strip()))
    ensure_home(home)
    tmp = home / f".{ID_FILE}.{os.getpid()}.{uuid.uuid4().hex}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(str(uuid.uuid4()) + "\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    except OSError:  # a file system without hard links: fall back to an exclusive rename
        if not path.exists():
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    try:
        return str(uuid.UUID(path.read_text(encoding="utf-8").strip()))
    except ValueError:  # a corrupt id file: replace it
        new = str(uuid.uuid4())
        write_private(path, new + "\n")
        return new


def read_choice(home: Path) -> str | None:
    """The user's persisted choice ("enabled" / "disabled"), or None if never made."""
    try:
        value = (home / CHOICE_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return value if value in ("enabled", "disabled") else None


def write_choice(home: Path, choice: str) -> Path:
    """Persist `otel-spawn enable|disable`; returns the file written."""
    ensure_home(home)
    path = home / CHOICE_FILE
    write_private(path, choice + "\n")
    return path


def claim_notice(home: Path) -> bool:
    """True exactly once per state directory: the first caller shows the notice."""
    ensure_home(home)
    try:
        fd = os.open(home / NOTICE_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    os.close(fd)
    return True
