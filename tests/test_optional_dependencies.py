"""Optional packages are optional: with them hidden by an import hook, every module imports, every
command's help works, the main job trains, and each command that needs one says in one line which
extra to install (exit code 2).

Each check runs in a fresh interpreter whose ``sys.meta_path`` refuses the hidden packages, as on a
machine where they were never installed.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from spikeforge.cli import COMMANDS

OPTIONAL = ("nir", "nirtorch", "h5py", "lz4", "zstandard", "matplotlib", "tensorboard", "sklearn", "scipy",
            "triton", "aedat", "dv_processing", "tonic", "spikingjelly", "snntorch", "norse")

HIDE = textwrap.dedent("""
    import sys
    HIDDEN = set(sys.argv[1].split(","))

    class Hide:
        # Wraps a finder so that it finds none of the hidden packages: imports of them fail with
        # ModuleNotFoundError and importlib.util.find_spec answers None, as when never installed.
        def __init__(self, finder):
            self.finder = finder

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HIDDEN:
                return None
            return self.finder.find_spec(name, path, target)

        def __getattr__(self, attr):
            return getattr(self.finder, attr)

    sys.meta_path[:] = [Hide(finder) for finder in sys.meta_path]
    for name in list(sys.modules):
        if name.split(".")[0] in HIDDEN:
            del sys.modules[name]
""")


def run_hidden(hidden, body: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``body`` (Python) in a fresh interpreter with the packages ``hidden`` unimportable."""
    code = HIDE + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code, ",".join(hidden), *args], capture_output=True, text=True,
                          timeout=300)


def run_cli_hidden(hidden, argv: list[str], cwd) -> subprocess.CompletedProcess:
    """``spikeforge ARGV`` (through :func:`spikeforge.cli.main`) with ``hidden`` unimportable."""
    body = "import json, sys\nfrom spikeforge.cli import main\nsys.exit(main(json.loads(sys.argv[2])))\n"
    code = HIDE + body
    return subprocess.run([sys.executable, "-c", code, ",".join(hidden), json.dumps(argv)], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


def test_every_module_and_every_command_help_work_without_optional_packages():
    result = run_hidden(OPTIONAL, """
        import contextlib, importlib, io, pkgutil
        import spikeforge
        from spikeforge.cli import COMMANDS, main

        failed = []
        for module in pkgutil.walk_packages(spikeforge.__path__, "spikeforge."):
            if module.name.endswith("__main__"):
                continue
            try:
                importlib.import_module(module.name)
            except BaseException as err:
                failed.append(f"{module.name}: {type(err).__name__}: {err}")
        for argv in [["--help"]] + [[command, "--help"] for command in COMMANDS]:
            with contextlib.redirect_stdout(io.StringIO()) as out:
                code = main(argv)
            if code != 0 or "usage:" not in out.getvalue():
                failed.append(f"spikeforge {' '.join(argv)}: exit {code}")
        print("\\n".join(failed))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A one-epoch digits run made with every optional package hidden (the main job on a bare install)."""
    folder = tmp_path_factory.mktemp("bare")
    result = run_cli_hidden(OPTIONAL, ["train", "--run-dir", "run", "epochs=1", "model.kwargs.width=4",
                                       "progress=false"], folder)
    assert result.returncode == 0, result.stderr
    assert "done: best test accuracy" in result.stdout
    return folder / "run"


def one_line_hint(result: subprocess.CompletedProcess, extra: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and f'pip install "spikeforge[{extra}]"' in result.stderr, result.stderr


def test_main_job_runs_without_optional_packages_and_writes_no_plot(trained_run):
    assert (trained_run / "last.pt").is_file() and (trained_run / "metrics.jsonl").is_file()
    assert not (trained_run / "history.png").exists() and not (trained_run / "tensorboard").exists()


def test_export_names_the_nir_extra(trained_run):
    result = run_cli_hidden(["nir"], ["export", "--checkpoint", str(trained_run / "best.pt"), "--format", "nir",
                                      "out.nir"], trained_run)
    one_line_hint(result, "nir")
    assert "spikeforge export needs the 'nir' package" in result.stderr
    assert not (trained_run / "out.nir").exists()


@pytest.mark.parametrize("option", [["--plot", "cmp.png"], ["--redraw"]])
def test_runs_plot_names_the_plot_extra(trained_run, option):
    one_line_hint(run_cli_hidden(["matplotlib"], ["runs", str(trained_run), *option], trained_run), "plot")


def test_mvsec_names_the_events_extra(tmp_path):
    (tmp_path / "indoor_flying1_data.hdf5").write_bytes(b"")
    result = run_hidden(["h5py"], """
        import sys
        from spikeforge.data.events.mvsec import MVSECRecording
        from spikeforge.optional import MissingDependency
        try:
            MVSECRecording(sys.argv[2])
        except MissingDependency as err:
            print(err)
    """, str(tmp_path / "indoor_flying1_data.hdf5"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "MVSEC (HDF5 files) needs the 'h5py' package: pip install \"spikeforge[events]\""


@pytest.mark.parametrize("package, code", [("lz4", 1), ("zstandard", 3)])
def test_compressed_aedat4_names_the_events_extra(tmp_path, package, code):
    spec = importlib.util.spec_from_file_location("event_files", Path(__file__).parent / "data/events/event_files.py")
    event_files = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(event_files)
    write_aedat4 = event_files.write_aedat4
    path = write_aedat4(tmp_path / "c.aedat4", [(0, [(1, 1, 1, True)])], compression=code, compress=lambda b: b)
    result = run_hidden([package], """
        import sys
        from spikeforge.data.events import read_events
        from spikeforge.optional import MissingDependency
        try:
            read_events(sys.argv[2])
        except MissingDependency as err:
            print(err)
    """, str(path))
    assert result.returncode == 0, result.stderr
    assert f"needs the '{package}' package: pip install \"spikeforge[events]\"" in result.stdout
    assert str(path) in result.stdout


def test_every_command_is_listed_in_the_main_help(capsys):
    from spikeforge.cli import main

    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert all(f"    {command}" in text for command in COMMANDS)
