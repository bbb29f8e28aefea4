"""One delivering process per SQLite spool file, held by an OS lock.

Leases live in the forwarder's memory (`leases.py`), so a second forwarder on the same
file would send what the first has in flight, and a dry run beside a real forwarder
would "deliver" the real one's events to its log and delete them. So the process that
delivers takes an exclusive `flock` on a file beside the spool (``spool.db.lock``) and
writes who it is into it, for the message a second one gets. The kernel releases the
lock when the process ends, however it ends (SIGKILL included), so a lock is never
stale and nobody has to clean up after a crash. The file itself stays: removing it
could let two processes lock two different files of the same name.

Processes that only take events in (``serve --no-forward``) and the operator commands
do not take the lock; they share the file through SQLite's own locking.
"""

from __future__ import annotations

import fcntl
import os
import socket

import orjson

from ...errors import DeliveryClaimed, SpoolError

# What is read of the holder's record: it is one short JSON line.
_RECORD_BYTES = 4096


class DeliveryLock:
    """The lock on ``<spool>.lock``, taken by `acquire` until `release` or the end of the
    process."""

    def __init__(self, spool_path: str) -> None:
        self.spool_path = spool_path
        self.path = spool_path + ".lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock without waiting; `DeliveryClaimed` naming the holder if it is
        taken: by another process, another spool object of this one, or this one (a
        second forwarder's `reset_leases` would hand out what the first has in flight)."""
        if self._fd is not None:
            raise DeliveryClaimed(
                self.spool_path, f"a forwarder of this process, pid {os.getpid()}"
            )
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise SpoolError(f"cannot open the delivery lock {self.path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(os.pread(fd, _RECORD_BYTES, 0))
            os.close(fd)
            raise DeliveryClaimed(self.spool_path, holder) from None
        except OSError as exc:
            os.close(fd)
            raise SpoolError(f"cannot lock {self.path}: {exc}") from exc
        record = {"pid": os.getpid(), "host": socket.gethostname()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, orjson.dumps(record) + b"\n", 0)
        self._fd = fd

    def release(self) -> None:
        """Let another process deliver. Closing the file releases the lock; the record is
        cleared first, under the lock, so that nobody reads a name that no longer holds it."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)


def _holder(raw: bytes) -> str:
    """How a refused process names the holder: its pid, and its host when not ours (a
    container beside this one, or another machine on a shared volume)."""
    try:
        record = orjson.loads(raw)
        pid, host = int(record["pid"]), str(record["host"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        # The holder has locked the file and not yet written itself down.
        return "pid unknown"
    return f"pid {pid}" if host == socket.gethostname() else f"pid {pid} on host {host}"
