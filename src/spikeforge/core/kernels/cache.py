"""A private, verified on-disk cache of compiled kernels: shared libraries and generated Python modules.

The folder is ``$SPIKEFORGE_CACHE/kernels`` (default ``~/.cache/spikeforge/kernels``).
A library entry is ``<name>.so`` plus its build record ``<name>.build``, one line
``<key> <sha256 of the .so>``: the key hashes everything the binary depends on
(sources, compiler, flags, machine), the digest is taken when the library is
built. Loading a library runs its code (constructors), so a cached one is loaded
only if its folder and both files belong to this user and nobody else can write
them, and the key and the digest of its bytes match the record. A new library is
built in a private temporary folder, fsynced, loaded from there and only then
renamed into the cache (after its record is written), so an interrupted build
never leaves a truncated library that passes the check.

Whatever goes wrong ends in one warning line per kernel, never in a crash: an
entry that does not verify is rebuilt; a folder that cannot be used (someone
else's, writable by others, read-only) is replaced by a private temporary one;
when compiling or loading fails there too, :func:`load_library` returns None and
the caller falls back to torch operations.

A generated Python module (Triton kernels, whose JIT reads its source from a file)
is ``<name>.py``, named by its source's digest; it is imported only if the folder
and the file belong to this user, nobody else can write them, and the file holds
exactly the source the caller generated (else it is rewritten first).
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import os
import stat
import tempfile
import warnings
from pathlib import Path
from types import ModuleType
from typing import Callable

__all__ = ["BuildError", "cache_dir", "load_library", "load_module"]

#: ``build(path)`` writes the library to ``path``; the folder of ``path`` (empty, private) is its scratch space.
Build = Callable[[Path], None]


class BuildError(Exception):
    """The compiler failed; the message is one line."""


class CacheError(Exception):
    """The cache folder or an entry cannot be used; the message is one line."""


def cache_dir() -> Path:
    """The kernel cache folder: ``$SPIKEFORGE_CACHE/kernels``, default ``~/.cache/spikeforge/kernels``."""
    return Path(os.environ.get("SPIKEFORGE_CACHE", Path.home() / ".cache" / "spikeforge")) / "kernels"


def load_library(directory: Path, name: str, key: str, build: Build) -> ctypes.CDLL | None:
    """The library ``name`` built for ``key``: verified from ``directory``, else built (and cached).

    Warns once (one line) when anything fails; None when no library could be built and loaded.
    """
    notes: list[str] = []
    try:
        try:
            library = _from_cache(directory, name, key, build, notes)
        except CacheError as err:
            notes.append(f"{err}; compiling into a private temporary folder")
            library = _build_privately(build)
    except (BuildError, CacheError, OSError) as err:
        notes.append(f"{err}; using torch operations instead of the compiled kernel")
        library = None
    if notes:
        warnings.warn("spikeforge: " + "; ".join(notes), RuntimeWarning, stacklevel=2)
    return library


def _from_cache(directory: Path, name: str, key: str, build: Build, notes: list[str]) -> ctypes.CDLL:
    """Load the verified entry, or build it and publish it; notes an entry that had to be replaced."""
    _check_folder(directory)
    library = directory / f"{name}.so"
    problem = _entry_problem(library, key)
    if problem is None:
        return _dlopen(library)
    if os.path.lexists(library):
        notes.append(f"cached kernel {library} {problem}; rebuilding it")
    try:
        with tempfile.TemporaryDirectory(dir=directory, prefix=".build-") as tmp:
            built, digest = _build_and_load(Path(tmp), build)
            _publish(Path(tmp) / "kernel.so", library, f"{key} {digest}\n")
    except OSError as err:
        raise CacheError(f"cannot write the kernel cache {directory} ({err})") from None
    return built


def _build_privately(build: Build) -> ctypes.CDLL:
    """Build and load in a fresh private temporary folder, removed afterwards (the mapping stays)."""
    with tempfile.TemporaryDirectory(prefix="spikeforge-kernel-") as tmp:
        return _build_and_load(Path(tmp), build)[0]


def _build_and_load(folder: Path, build: Build) -> tuple[ctypes.CDLL, str]:
    """Build ``folder/kernel.so``, make it durable and private, load it; returns ``(library, sha256)``."""
    path = folder / "kernel.so"
    build(path)
    os.chmod(path, 0o755)
    digest = _sync_and_hash(path)
    return _dlopen(path), digest


def _publish(built: Path, library: Path, record: str) -> None:
    """Rename ``built`` to ``library`` after writing its build record, then sync the folder."""
    staged = built.with_suffix(".build")
    with open(staged, "w") as file:
        file.write(record)
        file.flush()
        os.fsync(file.fileno())
    os.chmod(staged, 0o644)
    os.replace(built, library)
    os.replace(staged, library.with_suffix(".build"))
    folder = os.open(library.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _sync_and_hash(path: Path) -> str:
    """sha256 of the file's bytes, after flushing them to disk."""
    with open(path, "rb") as file:
        os.fsync(file.fileno())
        return hashlib.sha256(file.read()).hexdigest()


def _dlopen(path: Path) -> ctypes.CDLL:
    try:
        return ctypes.CDLL(str(path))
    except OSError as err:
        raise CacheError(f"cannot load the kernel {path} ({err})") from None


def _untrusted(info: os.stat_result) -> str | None:
    """Why a file or folder with this status cannot be trusted (None if it can)."""
    if info.st_uid != os.geteuid():
        return f"belongs to uid {info.st_uid}, not to this user (uid {os.geteuid()})"
    if info.st_mode & 0o022:
        return f"is writable by other users (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def _check_folder(directory: Path) -> None:
    """Create the cache folder (private) if needed; raise CacheError if it cannot be trusted."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = directory.stat()
    except OSError as err:
        raise CacheError(f"cannot create the kernel cache {directory} ({err})") from None
    problem = _untrusted(info)
    if problem is not None:
        raise CacheError(f"kernel cache {directory} {problem}, not using it")


def _file_problem(path: Path) -> str | None:
    """Why the cached file ``path`` is not to be trusted: missing, not a regular file, or not ours alone."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return f"has no {path.name}"
    if not stat.S_ISREG(info.st_mode):
        return f"{path.name} is not a regular file"
    problem = _untrusted(info)
    return None if problem is None else f"{path.name} {problem}"


def _entry_problem(library: Path, key: str) -> str | None:
    """Why the cached ``library`` cannot be loaded for ``key`` (None if it verifies)."""
    record = library.with_suffix(".build")
    for path in (library, record):
        problem = _file_problem(path)
        if problem is not None:
            return problem
    try:
        recorded = record.read_bytes().split()
        digest = hashlib.sha256(library.read_bytes()).hexdigest()
    except OSError as err:
        return f"cannot be read ({err})"
    if recorded != [key.encode(), digest.encode()]:
        return "does not match its build record (corrupt, truncated or replaced)"
    return None


def load_module(directory: Path, name: str, source: str) -> ModuleType | None:
    """Import the Python ``source`` as module ``name`` from the file ``directory/<name>.py``.

    The file is (re)written unless it verifies; when the folder cannot be used, a private temporary
    folder is (kept for the process: a JIT may read the source again). Warns once (one line) when
    anything fails; None when the module could not be written or imported.
    """
    notes: list[str] = []
    try:
        try:
            path = _verified_source(directory, name, source, notes)
        except CacheError as err:
            notes.append(f"{err}; writing the kernel into a private temporary folder")
            path = _write_source(Path(tempfile.mkdtemp(prefix="spikeforge-kernel-")), name, source)
        module = _import(path, name)
    except (CacheError, OSError, SyntaxError, ImportError) as err:
        notes.append(f"cannot load the generated kernel {name} ({err}); using torch operations instead")
        module = None
    if notes:
        warnings.warn("spikeforge: " + "; ".join(notes), RuntimeWarning, stacklevel=2)
    return module


def _verified_source(directory: Path, name: str, source: str, notes: list[str]) -> Path:
    """``directory/<name>.py`` holding exactly ``source``: as found if it verifies, else written anew."""
    _check_folder(directory)
    path = directory / f"{name}.py"
    problem = _source_problem(path, source)
    if problem is None:
        return path
    if os.path.lexists(path):
        notes.append(f"cached kernel {path} {problem}; rewriting it")
    try:
        return _write_source(directory, name, source)
    except OSError as err:
        raise CacheError(f"cannot write the kernel cache {directory} ({err})") from None


def _source_problem(path: Path, source: str) -> str | None:
    """Why ``path`` cannot be imported as ``source`` (None if it verifies)."""
    problem = _file_problem(path)
    if problem is not None:
        return problem
    try:
        if path.read_bytes() != source.encode():
            return "does not hold the generated source (corrupt, truncated or replaced)"
    except OSError as err:
        return f"cannot be read ({err})"
    return None


def _write_source(directory: Path, name: str, source: str) -> Path:
    """Write ``directory/<name>.py`` atomically (a private temporary file, synced, then renamed)."""
    path = directory / f"{name}.py"
    fd, staged = tempfile.mkstemp(dir=directory, prefix=".build-", suffix=".py")
    try:
        with os.fdopen(fd, "w") as file:
            file.write(source)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(staged, 0o644)
        os.replace(staged, path)
    except BaseException:
        Path(staged).unlink(missing_ok=True)
        raise
    return path


def _import(path: Path, name: str) -> ModuleType:
    """Execute the module file ``path`` (not registered in ``sys.modules``)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
