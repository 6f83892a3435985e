"""Without the ``nir`` package every spikeforge.export module imports, and export/import say which extra to install."""

import json
import subprocess
import sys
import textwrap

# Runs in a fresh interpreter: ``nir`` is blocked before anything imports it, whatever is installed.
SCRIPT = textwrap.dedent('''
    import importlib, importlib.abc, json, pkgutil, sys

    class NoNir(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "nir":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, NoNir())
    import torch
    from torch import nn
    import spikeforge as sf
    import spikeforge.export as export
    from spikeforge.optional import MissingDependency

    modules = [m.name for m in pkgutil.iter_modules(export.__path__)]
    for name in modules:
        importlib.import_module(f"spikeforge.export.{name}")
    net = sf.SpikingNetwork(nn.Sequential(nn.Linear(4, 2), sf.LIF()), static_ndim=2)
    errors = {}
    for call in (lambda: export.to_nir(net, torch.rand(1, 4)), lambda: export.from_nir("net.nir")):
        try:
            call()
        except MissingDependency as err:
            errors[len(errors)] = str(err)
    print(json.dumps({"modules": modules, "errors": list(errors.values()), "nir": "nir" in sys.modules}))
''')


def test_export_modules_import_without_nir_and_name_the_extra():
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.splitlines()[-1])
    assert {"nir", "neurons", "layers", "executor", "trace"} <= set(result["modules"])
    assert not result["nir"]
    hint = """NIR export/import needs the 'nir' package: pip install "spikeforge[nir]\""""
    assert result["errors"] == [hint, hint]
