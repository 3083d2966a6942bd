"""The spool's journal: one append-only file per process, written on the host's thread when a step ends.

Appending a span record is a copy into the file's shared memory map (the OS page cache), well under
a microsecond; where the file cannot be mapped safely it is one pwrite(2). Either way the entry is
in the page cache when the step returns, so it survives SIGKILL and os._exit. The map matters
beyond its speed: write(2) hands the GIL back, and a sender thread waiting for it then takes it at
every step, which doubled the host's cost per step while the sender was busy (28-35 us against
50-56 us per step in a 30,000-step loop with the sender draining to a live endpoint). The sender
thread sends entries straight from it or folds them into the SQLite spool (recording how far it
got in the same transaction; see _spool_journal.py); the journal is removed when the spool closes.
The journal of a process that died is folded in by the next process of the app that opens the
spool, or by `otel-spawn flush`.

The file is allocated ahead of the entries (posix_fallocate, so a full disk is an error at
allocation, never a SIGBUS at the copy), in chunks from 64 KiB doubling to 1 MiB; readers stop at
the first zero length. An entry's length is written last, so an entry cut short by a crash reads
as the end. Mapping is given up, for pwrite(2), when free space is below 64 MiB.

A process holds an exclusive flock on its journal for as long as it lives; the kernel drops it
when the process dies, however it dies, which is how another process tells an orphan from a live
journal. The first entry is the header (what every event of that process shares), so any process
can translate the records. The other entries are scrubbed span records, each a tuple in marshal
format (`RECORD_FIELDS` in _translate.py; journals written before hold dicts, read all the same):
nothing unscrubbed reaches the disk.
POSIX only (flock); elsewhere the spool writes to SQLite directly.
"""

from __future__ import annotations

import contextlib
import marshal
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from otel_spawn._fork import reset_after_fork

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

PREFIX = "journal-"
SUFFIX = ".journal"
READ_CHUNK = 1 << 20  # fold at most this many bytes per transaction (bounds the memory a fold takes)
ROTATE_BYTES = 1 << 20  # a fold starts a new journal once the current one holds this much

TEMPORARY_GRACE_SECONDS = 60.0  # a leftover temporary younger than this may be a journal being created

MAP_FIRST = 64 << 10  # the first allocation of a journal; doubled at each growth up to MAP_STEP
MAP_STEP = 1 << 20
MAP_FREE_MARGIN = 64 << 20  # below this much free disk the journal is written with pwrite(2) instead

AVAILABLE = fcntl is not None
MAPPING = hasattr(os, "posix_fallocate")  # Linux, FreeBSD; elsewhere pwrite(2)
_LENGTH = struct.Struct("<I")
_TYPICAL_ENTRY = 1024  # bytes read per entry wanted; a longer entry is read whole all the same


class Journal:
    """This process's journal; created on the first append."""

    def __init__(self, home: Path, owner: str) -> None:
        self.home = home
        self.owner = owner
        self.fd: int | None = None
        self.name = ""
        self.size = 0  # bytes of the current file written (whole entries only)
        self.offset = 0  # bytes of the current file folded into SQLite or sent so far
        self.appending = True  # False after a failed write: what is in the file is still folded
        self.mapping = MAPPING  # False once mapping failed (or never possible): pwrite(2)
        self._map: mmap.mmap | None = None  # the file up to `_allocated`
        self._allocated = 0
        self._generation = 0
        self.lock = threading.Lock()  # appends vs. rotation
        reset_after_fork(self)

    def append(self, payloads: Sequence[bytes], header: bytes) -> None:
        """Write one entry per payload (a record in marshal format); `header` starts a new file. On
        OSError nothing of them stays in the file (a partial write is cut off again) and the caller
        stores them another way."""
        with self.lock:
            if self.fd is None:
                self._create(header)
            start = end = self.size
            for payload in payloads:
                end += _LENGTH.size + len(payload)
            if self._map is not None and (end <= self._allocated or self._grow(end)):
                at = start
                for payload in payloads:
                    size = len(payload)
                    self._map[at + _LENGTH.size : at + _LENGTH.size + size] = payload
                    _LENGTH.pack_into(self._map, at, size)  # last: now the entry counts
                    at += _LENGTH.size + size
            else:
                assert self.fd is not None
                try:
                    _write_all(self.fd, b"".join(map(frame, payloads)), start)
                except OSError:
                    with contextlib.suppress(OSError):
                        os.ftruncate(self.fd, start)
                    raise
            self.size = end

    def _grow(self, end: int) -> bool:
        """Allocate and map the file past `end`; False, and from now on pwrite(2), if it cannot be."""
        assert self.fd is not None
        step = min(max(self._allocated, MAP_FIRST), MAP_STEP)
        allocated = (end // step + 1) * step
        try:
            free = os.fstatvfs(self.fd)
            if free.f_bavail * free.f_frsize < MAP_FREE_MARGIN:
                raise OSError("less than 64 MiB of free disk")
            os.posix_fallocate(self.fd, 0, allocated)
            mapped = mmap.mmap(self.fd, allocated)
        except (OSError, ValueError):
            self._unmap()
            self.mapping = False
            return False
        self._unmap()
        self._map, self._allocated = mapped, allocated
        return True

    def _unmap(self) -> None:
        if self._map is not None:
            self._map.close()
        self._map, self._allocated = None, 0

    def _create(self, header: bytes) -> None:
        self._generation += 1
        name = f"{PREFIX}{self.owner}-{self._generation}{SUFFIX}"
        temporary = self.home / f".{name}"  # not a journal until it is locked and has its header
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)  # no O_APPEND: see _grow
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _write_all(fd, header, 0)
            os.replace(temporary, self.home / name)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        self.name, self.offset, self.size = name, 0, len(header)
        self.fd = fd  # before _grow, and the sender reads fd without the lock
        if self.mapping:
            self._grow(self.size)

    def detach(self, force: bool = False) -> tuple[int, str] | None:
        """Stop appending to the current file once it holds ROTATE_BYTES (or now, if `force`): the
        next append starts a new file. Returns (fd, name) of the old one, for the caller to fold the
        rest of and remove; its lock is held until the caller closes the fd."""
        with self.lock:
            if self.fd is None or (not force and self.size < ROTATE_BYTES):
                return None
            old = (self.fd, self.name)
            self.fd = None
            self._unmap()
            return old

    def _after_fork(self) -> None:
        """A forked child writes a journal of its own (the parent's file and lock stay the parent's)."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)  # the child's copy: the parent keeps its lock
        self.fd = None
        self._unmap()  # the child's view of the parent's file
        self.owner = f"{self.owner}.{os.getpid()}"
        self.lock = threading.Lock()


def frame(payload: bytes) -> bytes:
    """One journal entry: the payload's length, then the payload (a record or the header in marshal
    format: plain data, which marshal encodes ~4x faster than JSON on the host's thread)."""
    return _LENGTH.pack(len(payload)) + payload


def new_frames(
    fd: int, offset: int, limit: int | None = None, size: int | None = None
) -> tuple[list[bytes], int]:
    """The complete entries (payloads) after `offset` and before `size` (default: the file's size),
    at most READ_CHUNK bytes of them (at least one whole entry) and at most `limit` entries, and the
    offset after them. An entry cut short (the disk filled up, the machine died) is never complete,
    so it is never returned; nor anything after a zero length (space allocated, not yet written)."""
    size = os.fstat(fd).st_size if size is None else size
    if size - offset < _LENGTH.size:
        return [], offset
    want = READ_CHUNK if limit is None else min(READ_CHUNK, limit * _TYPICAL_ENTRY)  # more is read if needed
    data = os.pread(fd, min(size - offset, want), offset)
    out: list[bytes] = []
    pos = 0
    while pos + _LENGTH.size <= len(data) and (limit is None or len(out) < limit):
        (length,) = _LENGTH.unpack_from(data, pos)
        if not length:
            break
        start, end = pos + _LENGTH.size, pos + _LENGTH.size + length
        if end > len(data):
            if not out and offset + end <= size:  # one entry bigger than a chunk: read it whole
                out.append(os.pread(fd, length, offset + start))
                pos = end
            break
        out.append(data[start:end])
        pos = end
    return out, offset + pos


def header(fd: int) -> bytes:
    """The first entry of a journal (what its process's events share)."""
    frames, _ = new_frames(fd, 0, limit=1)
    if not frames:
        raise ValueError("the journal has no header")
    return frames[0]


# A payload from a record's entry or a header (plain data), and back.
encode: Callable[[Any], bytes] = marshal.dumps
decode: Callable[[bytes], Any] = marshal.loads


def orphans(home: Path) -> Iterator[tuple[str, int]]:
    """(name, fd) of each journal whose process is gone, locked by us while the caller folds it.

    The fd is closed (and the lock dropped) when the caller asks for the next one. Leftover
    temporaries of a process that died while creating its journal hold no records and are removed.
    """
    if fcntl is None:
        return
    try:
        entries = [e.name for e in os.scandir(home) if PREFIX in e.name and e.name.endswith(SUFFIX)]
    except OSError:
        return
    for name in entries:
        if name.startswith(".") and not _older_than(home / name, TEMPORARY_GRACE_SECONDS):
            continue  # may be a journal another process is creating right now (not yet locked)
        try:
            fd = os.open(home / name, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # its process is alive
            os.close(fd)
            continue
        try:
            if os.fstat(fd).st_nlink == 0:  # folded and removed by another process meanwhile
                continue
            if name.startswith("."):
                os.unlink(home / name)
                continue
            yield name, fd
        finally:
            os.close(fd)


def pending(home: Path) -> bool:
    """True if any journal (this process's or another's) exists in `home`: cheap, no locking."""
    try:
        with os.scandir(home) as entries:
            return any(e.name.startswith(PREFIX) and e.name.endswith(SUFFIX) for e in entries)
    except OSError:
        return False


def set_aside(home: Path, name: str) -> None:
    """Rename an unreadable journal out of the way (kept for inspection, never folded again)."""
    with contextlib.suppress(OSError):
        os.replace(home / name, home / f"{name}.unreadable")


def _write_all(fd: int, data: bytes, offset: int) -> None:
    if os.pwrite(fd, data, offset) != len(data):
        raise OSError("short write to the journal (disk full?)")


def _older_than(path: Path, seconds: float) -> bool:
    try:
        return path.stat().st_mtime < time.time() - seconds
    except OSError:
        return False
