"""Run folders a run owns: one process at a time, never reused by accident, files written whole.

A :class:`RunFolder` holds an exclusive ``flock`` on ``<run>/.lock`` for the length of a run (the
kernel drops it when the process ends, also on SIGKILL), so a second trainer or searcher on the
folder stops at once with the owner's pid. A folder that already holds a run's files is only
reused to continue that run (``resume``) or after clearing them (``overwrite``). Files are replaced
atomically (:func:`atomic_write`: temporary file, fsync, rename); a failed write (disk full,
permission) becomes one :class:`WriteError` line naming the file, with the previous version intact.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import shutil
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, Callable

import yaml

__all__ = ["RunFolder", "RunFolderError", "WriteError", "OUTPUTS", "RUN_FILES", "atomic_write", "write_error",
           "check_available"]

#: What a run writes besides its config.yaml (deleted in this order: a folder cleared part way never
#: resumes half a run).
OUTPUTS = ("last.pt", "best.pt", "metrics.jsonl", "history.png", "window_fraction.png", "dgs_b.png", "genotype.json",
           "architecture.png", "tensorboard")

#: Everything spikeforge writes into a run folder (what ``overwrite`` deletes).
RUN_FILES = (*OUTPUTS, "config.yaml")

LOCK = ".lock"

#: Temporary files of :func:`atomic_write` (``last.pt.1a2b3c4d.tmp``) and of the writability probe; one
#: left behind by a killed write is removed when the folder is next claimed.
_TEMPORARY = re.compile(r"(config\.yaml|metrics\.jsonl|last\.pt|best\.pt|genotype\.json|\.probe)\.[a-z0-9_]{8}\.tmp")

#: Errors of torch's checkpoint writer when the file underneath failed (it hides the OSError's reason).
_TORCH_WRITE_FAILURE = re.compile(r"unexpected pos|enforce fail|PytorchStreamWriter failed|file write failed")


class RunFolderError(RuntimeError):
    """A run folder that cannot be used now: in use by another process, holding another run, not writable."""


class WriteError(RunFolderError):
    """A file of a run could not be written (disk full, no permission); the message names it."""


def _reason(err: BaseException) -> str | None:
    """Why a write failed, from ``err`` or the errors it arose from; None when it is no write failure."""
    seen = err
    while seen is not None:
        if isinstance(seen, OSError):
            return seen.strerror or errno.errorcode.get(seen.errno or 0) or str(seen)
        seen = seen.__cause__ or seen.__context__
    if isinstance(err, RuntimeError) and _TORCH_WRITE_FAILURE.search(str(err)):
        return "the write failed (is the disk full?)"
    return None


def write_error(path: Path, err: BaseException, consequence: str = "") -> WriteError | None:
    """``cannot write <path>: <reason>[; <consequence>]`` when ``err`` is a failed write, else None."""
    reason = _reason(err)
    if reason is None:
        return None
    return WriteError(f"cannot write {path}: {reason}" + (f"; {consequence}" if consequence else ""))


def _temporary(path: Path) -> Path:
    return path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Replace ``path`` by what ``write(file)`` writes, all or nothing: into a temporary file beside it,
    flushed to disk, then renamed over it. On any failure the temporary file goes and ``path`` is as it
    was; a failed write raises :class:`WriteError` naming ``path``."""
    path = Path(path)
    tmp = _temporary(path)
    existed = path.exists()
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        failure = write_error(path, err, f"the previous {path.name} is intact" if existed else "")
        if failure is None:
            raise
        raise failure from None
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a power cut then keeps the new file, not a missing one)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _present(path: Path, names=RUN_FILES) -> list[str]:
    return [name for name in names if (path / name).exists()]


def _check_reuse(path: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to start a new run in a folder holding another one's files (unless told to replace them)."""
    found = _present(path)
    if found and not (resume or overwrite):
        raise RunFolderError(f"{path} already holds a run ({', '.join(found)}): continue it with --resume {path}, "
                             "or replace it with --overwrite")


def _lock_or_refuse(fd: int, path: Path) -> None:
    """Take the folder's lock on ``fd`` without waiting; one line naming the owner when it is taken."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if owner == str(os.getpid()):
            raise RunFolderError(f"{path} is in use by another run of this process") from None
        raise RunFolderError(f"{path} is in use by another spikeforge process (pid {owner or 'unknown'})") from None


def check_available(path: str | Path, resume: bool = False, overwrite: bool = False) -> None:
    """Fail now, before any set-up, when a run could not claim ``path`` (see :class:`RunFolder`);
    creates nothing. The claim itself checks again."""
    path = Path(path)
    if (path / LOCK).is_file():
        fd = os.open(path / LOCK, os.O_RDONLY)
        try:
            _lock_or_refuse(fd, path)
        finally:
            os.close(fd)  # drops the lock taken just to test it
    _check_reuse(path, resume, overwrite)


class RunFolder:
    """Exclusive use of the run folder ``path`` until :meth:`release` (or the end of the process).

    Claiming creates the folder, takes its lock (:class:`RunFolderError` when another process has it),
    checks that files can be created in it, removes temporary files of killed writes, and refuses a
    folder holding another run's files unless ``resume`` (continue it) or ``overwrite`` (delete them).
    """

    def __init__(self, path: str | Path, resume: bool = False, overwrite: bool = False):
        self.path = Path(path)
        self._fd: int | None = self._lock()
        try:
            self._probe()
            self._remove_temporaries()
            _check_reuse(self.path, resume, overwrite)
            if overwrite:
                self.clear()
        except BaseException:
            self.release()
            raise

    def _lock(self) -> int:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise RunFolderError(f"cannot use {self.path} as a run folder: {err.strerror}") from None
        try:
            _lock_or_refuse(fd, self.path)
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd

    def _probe(self) -> None:
        """Create and remove a file, so an unwritable folder fails before any work, not after an epoch."""
        probe = _temporary(self.path / ".probe")
        try:
            probe.touch(exist_ok=False)
            probe.unlink()
        except OSError as err:
            raise RunFolderError(f"cannot write to run folder {self.path}: {err.strerror}") from None

    def _remove_temporaries(self) -> None:
        for entry in self.path.iterdir():
            if _TEMPORARY.fullmatch(entry.name) and entry.is_file():
                entry.unlink()

    def clear(self, names=RUN_FILES) -> None:
        """Delete the run files ``names`` (other files stay)."""
        for name in _present(self.path, names):
            target = self.path / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()

    def start(self, config: dict, resume: bool, log=print) -> Path | None:
        """Where the run begins: its ``last.pt`` when resuming a run that wrote one; else None, after
        writing ``config`` (a recipe as a dict) as ``config.yaml``. A resumed run stopped before its
        first checkpoint starts over (with a ``log`` note), its partial outputs deleted."""
        last = self.path / "last.pt"
        if resume and last.is_file():
            return last
        if resume:
            log(f"note: {self.path} has no last.pt yet (stopped before its first checkpoint): starting the run over")
            self.clear(OUTPUTS)
        self.write_text("config.yaml", yaml.safe_dump(config, sort_keys=False))
        return None

    def write_text(self, name: str, text: str) -> None:
        """Replace the folder's file ``name`` by ``text`` atomically."""
        atomic_write(self.path / name, lambda f: f.write(text.encode()))

    @contextmanager
    def released_on_error(self):
        """Give the folder up when the block fails: a run that cannot begin does not keep its folder."""
        try:
            yield
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Give the folder up (idempotent); ``.lock`` stays, unlocked."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
