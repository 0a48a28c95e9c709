"""One command at a time per run directory: a lock file holding the PID of the command that writes there.

Two ``distill teacher`` commands on one ``--out`` would interleave their checkpoints; the second refuses
instead. A lock left by a killed command (its process gone, or the PID reused by another program) is stale
and taken over, so ``kill -9`` never leaves a directory that needs hand cleaning.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
from pathlib import Path
from types import TracebackType

from distill import UserError

LOCK_NAME = ".distill.lock"
# ".<name>.<8 random characters>.tmp", as distill's atomic writes name their temporary files (exports keep
# their suffix after it: ".model.torchscript.<random>.tmp.pt")
TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?")


def _start_time(pid: int) -> str | None:
    """The process start time from /proc (field 22 of stat): tells a live owner from a reused PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(owner: dict) -> bool:
    if owner.get("host") != socket.gethostname():
        return True  # another machine sharing the disk: we cannot tell, so assume it is running
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    started = owner.get("started")
    return started is None or _start_time(pid) in (None, started)


def check_out_dir(out: Path) -> None:
    """Refuse an ``--out`` that cannot be a directory (an existing file, or a path below one)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is an existing file; expected a directory (a new one, or a run directory)")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--out {out}: {parent} is a file, not a directory")
            break


class RunLock:
    """``with RunLock(out):`` holds ``out/.distill.lock`` for the block; ``out`` is created if missing, and
    removed again afterwards if the command left nothing in it (so a refused command leaves no trace)."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.path = self.out / LOCK_NAME
        self.created = False
        self.held = False

    def __enter__(self) -> RunLock:
        check_out_dir(self.out)
        try:
            if not self.out.exists():
                self.out.mkdir(parents=True)
                self.created = True
            self._take()
        except OSError as err:
            if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT):
                raise UserError(f"--out {self.out}: cannot write there ({err.strerror})") from None
            raise
        return self

    def _take(self) -> None:
        me = {"pid": os.getpid(), "started": _start_time(os.getpid()), "host": socket.gethostname()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    owner = json.loads(self.path.read_text())
                except (OSError, ValueError):
                    owner = {}  # half-written by a command killed while taking it: stale
                if isinstance(owner, dict) and _alive(owner):
                    raise UserError(
                        f"--out {self.out}: in use by another distill command (PID {owner.get('pid')} on "
                        f"{owner.get('host')}, lock file {self.path}); wait for it to finish or use another --out"
                    ) from None
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(me))
            self.held = True
            self._sweep()
            return
        raise UserError(f"--out {self.out}: could not take the lock file {self.path}; another command races for it")

    def _sweep(self) -> None:
        """Remove the temporary files of atomic writes that a killed command left in ``out`` and the run
        directories below it (``out/teacher``, ``out/students/kd``): holding the lock, no other command is
        writing them. Only names that ``tempfile.mkstemp`` made for distill match (see
        :func:`distill.checkpoint.atomic_write_text`), and the search goes two levels deep, not through an
        arbitrary tree that --out may point at."""
        for pattern in (".*.tmp*", "*/.*.tmp*", "*/*/.*.tmp*"):
            for p in self.out.glob(pattern):
                if TEMP_NAME.fullmatch(p.name) and p.is_file():
                    p.unlink(missing_ok=True)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
        if self.created:
            with contextlib.suppress(OSError):  # rmdir only succeeds when the command left it empty
                self.out.rmdir()
