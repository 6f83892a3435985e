"""The compiled-kernel cache: never trusted blindly, never fatal.

Every case ends with the neuron giving the reference's spikes and at most one
warning line; a library is only loaded after its folder, owner, mode and bytes
check out. Cases that could crash the interpreter (a truncated library) or
need a read-only mount run in a subprocess.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import spikeforge as sf
from spikeforge.core.kernels import cpu, toolchain

pytestmark = pytest.mark.skipif(not cpu.compiler_available(), reason="no C compiler")

SPEC = sf.LIF().spec  # the default LIF's kernel (float32) is the one every case loads

NEURON_SCRIPT = """
import warnings, torch, spikeforge as sf
from spikeforge.core.kernels import cpu, toolchain
warnings.simplefilter("always")
x = torch.randn(5, 3, 40, generator=torch.Generator().manual_seed(0)) + 0.8
for _ in range(2):
    assert torch.equal(sf.LIF()(x), sf.LIF(backend="reference")(x)), "auto spikes differ from the reference"
print("compiled" if cpu.load_kernel(sf.LIF().spec, torch.float32) is not None else "torch operations")
"""


def kernel_entry(folder: Path) -> tuple[Path, Path]:
    """The one cached library of ``folder`` and its build record."""
    (library,) = folder.glob("lif_*.so")
    return library, library.with_suffix(".build")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A kernels folder holding a good build of SPEC's kernel."""
    root = tmp_path_factory.mktemp("pristine")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPIKEFORGE_CACHE", str(root))
        cpu.load_kernel.cache_clear()
        assert cpu.load_kernel(SPEC, torch.float32) is not None
    cpu.load_kernel.cache_clear()
    return root / "kernels"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh ``$SPIKEFORGE_CACHE``; returns its kernels folder (not created). The in-process
    memo of loaded kernels is cleared around the test."""
    monkeypatch.setenv("SPIKEFORGE_CACHE", str(tmp_path / "cache"))
    cpu.load_kernel.cache_clear()
    yield tmp_path / "cache" / "kernels"
    cpu.load_kernel.cache_clear()


def copy_entry(pristine: Path, folder: Path) -> tuple[Path, Path]:
    """Copy the good build into a private ``folder``; returns its library and record paths."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    for path in pristine.iterdir():
        shutil.copy2(path, folder / path.name)
    return kernel_entry(folder)


def run_neuron_in_process() -> tuple[list[str], bool]:
    """Run the LIF twice (auto backend) against the reference; returns (spikeforge warnings, compiled?)."""
    x = torch.randn(5, 3, 40, generator=torch.Generator().manual_seed(0)) + 0.8
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            assert torch.equal(sf.LIF()(x), sf.LIF(backend="reference")(x)), "auto spikes differ from the reference"
    messages = [str(w.message) for w in caught if str(w.message).startswith("spikeforge:")]
    return messages, cpu.load_kernel(SPEC, torch.float32) is not None


def run_neuron_in_subprocess(cache_root: Path, prefix: list[str] = ()) -> tuple[list[str], str]:
    """Run NEURON_SCRIPT with ``$SPIKEFORGE_CACHE=cache_root``; returns (warning lines, last stdout line)."""
    env = {**os.environ, "SPIKEFORGE_CACHE": str(cache_root)}
    result = subprocess.run([*prefix, sys.executable, "-c", NEURON_SCRIPT], env=env, capture_output=True, text=True,
                            timeout=300)
    last = (result.stderr.strip().splitlines() or ["(no stderr)"])[-1]
    assert result.returncode == 0, f"neuron process died with exit status {result.returncode}: {last}"
    warnings_ = [line for line in result.stderr.splitlines() if "RuntimeWarning: spikeforge:" in line]
    return warnings_, result.stdout.strip().splitlines()[-1]


def assert_entry_verifies(folder: Path) -> None:
    library, record = kernel_entry(folder)
    key, digest = record.read_text().split()
    assert digest == hashlib.sha256(library.read_bytes()).hexdigest(), "cached library does not match its record"
    assert library.name == f"lif_{key[:24]}.so"
    for path in (folder, library, record):
        assert path.stat().st_mode & 0o022 == 0, f"{path} is writable by group or others"


def test_a_fresh_build_is_published_with_its_record_and_nothing_else(cache):
    messages, compiled = run_neuron_in_process()
    assert compiled and messages == []
    assert_entry_verifies(cache)
    assert sorted(p.suffix for p in cache.iterdir()) == [".build", ".so"], "build leftovers in the cache"


@pytest.mark.parametrize("keep_record", [True, False], ids=["with-record", "legacy-without-record"])
def test_truncated_library_is_rebuilt_instead_of_crashing(pristine, tmp_path, keep_record):
    """A library cut short (an interrupted write) used to kill every later run with a bus error."""
    library, record = copy_entry(pristine, tmp_path / "kernels")
    library.write_bytes(library.read_bytes()[: library.stat().st_size // 2])
    if not keep_record:
        record.unlink()
    warnings_, outcome = run_neuron_in_subprocess(tmp_path)
    assert outcome == "compiled"
    assert len(warnings_) == 1 and "rebuilding it" in warnings_[0], warnings_
    assert_entry_verifies(tmp_path / "kernels")


@pytest.mark.parametrize("valid_record", [False, True], ids=["record-mismatch", "record-matches-garbage"])
def test_garbage_library_is_never_fatal(pristine, cache, valid_record):
    """Garbage bytes: rebuilt when the record does not match; when the record vouches for them
    (so they are loaded and fail to load), compiled privately instead. One warning either way."""
    library, record = copy_entry(pristine, cache)
    library.write_bytes(os.urandom(library.stat().st_size))
    if valid_record:
        record.write_text(f"{record.read_text().split()[0]} {hashlib.sha256(library.read_bytes()).hexdigest()}\n")
    messages, compiled = run_neuron_in_process()
    assert compiled and len(messages) == 1, messages
    assert ("cannot load the kernel" if valid_record else "does not match its build record") in messages[0]


def plant(library: Path, marker: Path) -> None:
    """Write, at ``library``, a shared library whose constructor creates ``marker`` when loaded."""
    source = library.parent / "planted.c"
    source.write_text('#include <stdio.h>\n'
                      '__attribute__((constructor)) static void planted(void)\n'
                      f'{{ FILE* f = fopen("{marker}", "w"); if (f) fclose(f); }}\n'
                      'void lif_forward(void) {}\nvoid lif_backward(void) {}\n')
    subprocess.run([shutil.which("cc") or "gcc", "-shared", "-fPIC", str(source), "-o", str(library)], check=True)
    source.unlink()


PLANTS = {
    # where the planted library sits, and the record beside it
    "own-folder-record-of-the-real-build": dict(folder_mode=0o700, vouch=False, owner=None),
    "folder-writable-by-all": dict(folder_mode=0o777, vouch=True, owner=None),
    "folder-of-another-user": dict(folder_mode=0o755, vouch=True, owner="folder"),
    "file-of-another-user": dict(folder_mode=0o700, vouch=True, owner="file"),
}


@pytest.mark.parametrize("case", PLANTS)
def test_a_planted_library_is_never_loaded(pristine, cache, tmp_path, case):
    """Under the kernel's exact name, with a record matching it where the folder or owner is wrong:
    its constructor must never run, and the neuron still runs compiled with one warning."""
    setup = PLANTS[case]
    if setup["owner"] and os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    library, record = copy_entry(pristine, cache)
    marker = tmp_path / "constructor-ran"
    plant(library, marker)
    if setup["vouch"]:
        record.write_text(f"{record.read_text().split()[0]} {hashlib.sha256(library.read_bytes()).hexdigest()}\n")
    if setup["owner"]:
        os.chown(cache if setup["owner"] == "folder" else library, 65534, 65534)
    os.chmod(cache, setup["folder_mode"])
    before = {p.name: p.read_bytes() for p in cache.iterdir()}
    messages, compiled = run_neuron_in_process()
    assert not marker.exists(), "the planted library was loaded (its constructor ran)"
    assert compiled and len(messages) == 1, messages
    if setup["folder_mode"] & 0o022 or setup["owner"] == "folder":  # an untrusted folder is not written either
        assert {p.name: p.read_bytes() for p in cache.iterdir()} == before, "wrote into an untrusted cache folder"
        assert "compiling into a private temporary folder" in messages[0]
    else:
        assert_entry_verifies(cache)


def test_a_cache_that_cannot_be_created_compiles_privately(cache, tmp_path, monkeypatch):
    """``$SPIKEFORGE_CACHE`` under a regular file: mkdir fails for everyone, root included."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("SPIKEFORGE_CACHE", str(blocker / "cache"))
    messages, compiled = run_neuron_in_process()
    assert compiled and len(messages) == 1 and "cannot create the kernel cache" in messages[0], messages


def read_only_mount(folder: Path) -> list[str]:
    """A command prefix running the rest in a private mount namespace where ``folder`` is read-only."""
    script = f'mount --bind "{folder}" "{folder}" && mount -o remount,bind,ro "{folder}" && exec "$@"'
    return ["unshare", "-m", "sh", "-c", script, "sh"]


@pytest.fixture(scope="module")
def read_only_mounts(tmp_path_factory) -> None:
    probe = tmp_path_factory.mktemp("probe")
    try:
        ok = subprocess.run([*read_only_mount(probe), "sh", "-c", f'! touch "{probe}/x"'], capture_output=True,
                            timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    if not ok:
        pytest.skip("cannot make a read-only bind mount here (needs unshare and mount privileges)")


@pytest.mark.parametrize("has_entry", [False, True], ids=["empty", "holding-the-kernel"])
def test_read_only_cache(pristine, tmp_path, read_only_mounts, has_entry):
    """A read-only file system (root cannot write it either): an empty cache compiles into a private
    temporary folder with one warning; a valid entry is loaded without any."""
    folder = tmp_path / "kernels"
    if has_entry:
        copy_entry(pristine, folder)
    else:
        folder.mkdir(mode=0o700)
    warnings_, outcome = run_neuron_in_subprocess(tmp_path, read_only_mount(folder))
    assert outcome == "compiled"
    if has_entry:
        assert warnings_ == []
    else:
        assert len(warnings_) == 1 and "cannot write the kernel cache" in warnings_[0], warnings_


def test_a_failing_compiler_falls_back_to_torch_operations_with_one_warning(cache, monkeypatch):
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    toolchain.compiler.cache_clear()
    try:
        messages, compiled = run_neuron_in_process()
        assert not compiled and len(messages) == 1 and "compiling a CPU kernel failed" in messages[0], messages
        with pytest.raises(ValueError, match="backend='cpu' needs"):
            sf.LIF(backend="cpu")(torch.ones(2, 3))
    finally:
        toolchain.compiler.cache_clear()


@pytest.mark.parametrize("torch_openmp, fails, calls", [
    (True, False, [["-fopenmp"]]),
    (True, True, [["-fopenmp"], []]),  # a compiler without an OpenMP runtime: built again without it
    (False, False, [[]]),  # torch not on OpenMP threads: a second thread pool would compete with torch's
])
def test_kernels_are_built_with_openmp_where_torch_runs_on_it(monkeypatch, torch_openmp, fails, calls):
    monkeypatch.setattr(toolchain, "_torch_on_openmp", lambda: torch_openmp)
    seen = []

    def build(flags):
        seen.append(flags)
        if fails and flags:
            raise toolchain.BuildError("no omp.h")

    toolchain.build_with_openmp(build)
    assert seen == calls


def test_the_kernels_run_their_ranges_on_torch_s_openmp_threads_here():
    """With torch on OpenMP and GCC (whose OpenMP runtime is torch's on Linux) the libraries say so."""
    command = toolchain.compiler()
    if command is None or not toolchain._torch_on_openmp():
        pytest.skip("no C compiler, or torch does not run on OpenMP threads here")
    if "Free Software Foundation" not in toolchain.compiler_identity(command):
        pytest.skip("not GCC: its OpenMP runtime may be missing (the kernels then use the thread pool)")
    from spikeforge.core.kernels import bits

    assert cpu.load_kernel(sf.LIF().spec, torch.float32).openmp
    assert bits.load_codec().openmp
