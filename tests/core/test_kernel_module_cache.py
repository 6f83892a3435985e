"""Generated kernel modules in the kernel cache (the Triton kernels' source files): a cached file is
imported only when it is this user's, writable by nobody else, and holds exactly the generated
source; anything else is rewritten, or written to a private temporary folder, with one warning."""

import os
import warnings

import pytest

from spikeforge.core.kernels.cache import load_module

SOURCE = "VALUE = 42\n"


def load(folder, source=SOURCE):
    """``load_module`` and the warnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = load_module(folder, "gen_kernel", source)
    return module, [str(w.message) for w in caught]


def test_written_once_private_then_imported_as_found(tmp_path):
    folder = tmp_path / "kernels"
    module, notes = load(folder)
    assert module.VALUE == 42 and notes == []
    path = folder / "gen_kernel.py"
    assert path.read_text() == SOURCE
    assert oct(folder.stat().st_mode & 0o777) == oct(0o700) and oct(path.stat().st_mode & 0o777) == oct(0o644)
    written = path.stat().st_mtime_ns
    assert load(folder)[1] == [] and path.stat().st_mtime_ns == written


@pytest.mark.parametrize("damage", ["replaced", "truncated", "symlink", "writable by others"])
def test_an_entry_that_does_not_verify_is_rewritten(tmp_path, damage):
    folder = tmp_path / "kernels"
    load(folder)
    path = folder / "gen_kernel.py"
    if damage == "replaced":
        path.write_text("VALUE = 666\n")
    elif damage == "truncated":
        path.write_text(SOURCE[:5])
    elif damage == "symlink":
        elsewhere = tmp_path / "elsewhere.py"
        elsewhere.write_text(SOURCE)
        path.unlink()
        path.symlink_to(elsewhere)
    else:
        os.chmod(path, 0o666)
    module, notes = load(folder)
    assert module.VALUE == 42
    assert len(notes) == 1 and "rewriting it" in notes[0]
    assert path.is_file() and not path.is_symlink() and path.read_text() == SOURCE
    assert load(folder)[1] == []


def test_a_folder_others_can_write_is_not_used(tmp_path):
    folder = tmp_path / "kernels"
    folder.mkdir(mode=0o777)
    os.chmod(folder, 0o777)
    module, notes = load(folder)
    assert module.VALUE == 42
    assert len(notes) == 1 and "writable by other users" in notes[0] and "private temporary folder" in notes[0]
    assert not (folder / "gen_kernel.py").exists()


def test_a_source_that_does_not_import_gives_one_warning_and_none(tmp_path):
    module, notes = load(tmp_path / "kernels", "raise ImportError('no such backend')\n")
    assert module is None
    assert len(notes) == 1 and "cannot load the generated kernel gen_kernel" in notes[0]
