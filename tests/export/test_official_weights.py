"""Importing official checkpoints (spikeforge.export.official, ``spikeforge import-weights``).

The official state dicts are synthesised from ../shared/official-weights/*.json (key names, shapes,
dtypes and alias groups of the seed papers' models): every file must map completely, each official
tensor onto exactly one of our entries, with the documented entries dropped and filled and the
documented parameter-count differences. Hand-written correspondences, the official order of the layers,
and an independent functional forward of the official ResNet-20 are the references.
"""

import argparse
import functools
import hashlib
import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from spikeforge.cli import import_weights
from spikeforge.cli.common import load_network
from spikeforge.export.official import import_official, map_state, plan_import
from spikeforge.runtime.checkpoint import save_checkpoint
from spikeforge.train.trained import build_model, load_trained, trained_timesteps

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "official-weights"
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is not present")

#: JSON file -> (source, zoo model, data set).
CASES = {
    "spikedhs_cifar10_retrain_F48": ("spikedhs", "spikedhs", "cifar10"),
    "tet_resnet19_cifar10": ("tet", "resnet19", "cifar10"),
    "tet_vggsnn_cifar10dvs": ("tet", "vggsnn", "cifar10dvs"),
    "qcfs_resnet18_cifar10": ("qcfs", "resnet18", "cifar10"),
    "qcfs_resnet34_imagenet": ("qcfs", "resnet34", "imagenet"),
    "qcfs_vgg16_cifar10": ("qcfs", "vgg16", "cifar10"),
    "qcfs_vgg16_cifar100": ("qcfs", "vgg16", "cifar100"),
    "qcfs_vgg16_imagenet": ("qcfs", "vgg16", "imagenet"),
    "srp_resnet18_cifar10": ("srp", "resnet18", "cifar10"),
    "srp_resnet18_cifar100": ("srp", "resnet18", "cifar100"),
    "srp_resnet20_cifar10": ("srp", "resnet20", "cifar10"),
    "srp_resnet20_cifar100": ("srp", "resnet20", "cifar100"),
    "srp_resnet34_cifar10": ("srp", "resnet34", "cifar10"),
    "srp_resnet34_cifar100": ("srp", "resnet34", "cifar100"),
}

#: Our parameter count minus the official one (distinct tensors of the JSON listing), per model:
#: SpikeDHS drops the 5 DGS stem copies (conv 144x3x3x3 + bias, BN weight and bias) and alpha_diffb (5);
#: QCFS/SRP list the ReLU source ANN, ours has one lambda per activation (what a trained `up` holds).
STEM_COPY = 144 * 3 * 3 * 3 + 144 + 2 * 144
EXTRA = {"spikedhs": -(5 * STEM_COPY + 5), "resnet19": 0, "vggsnn": 0,
         "vgg16": 13 + 2, "resnet18": 1 + 2 * 8, "resnet20": 1 + 2 * 9, "resnet34": 1 + 2 * 16}

#: Our entries that the official files do not hold (stateless neurons' fixed surrogate widths; node shifts).
FILLED = {"spikedhs": r"backbone\..*\.(surrogate\.width|shift)", "tet": r"backbone\..*\.surrogate\.width",
          "qcfs": r"(?!)", "srp": r"(?!)"}

#: Hand-written correspondences (official key -> ours) from the official and our module layouts.
SPOTS = {
    "qcfs_vgg16_cifar10": {
        "layer3.8.weight": "features.8.conv.weight", "layer4.9.running_var": "features.12.bn.running_var",
        "layer5.10.up": "features.16.act.lam", "classifier.5.up": "head.2.3.lam", "classifier.7.bias": "head.2.4.bias"},
    "srp_resnet20_cifar10": {
        "conv1.2.up": "stem.0.act.lam", "conv3_x.0.shortcut.1.running_mean": "stages.1.0.shortcut.bn.running_mean",
        "conv4_x.2.residual_function.3.weight": "stages.2.2.branch.1.conv.weight",
        "conv2_x.1.relu.up": "stages.0.1.act.lam", "fc.weight": "fc.0.weight"},
    "qcfs_resnet34_imagenet": {"conv5_x.2.residual_function.4.bias": "stages.3.2.branch.1.bn.bias"},
    "tet_resnet19_cifar10": {
        "bn1.bn.weight": "backbone.stem.0.bn.weight",
        "layer2.0.bn1.bn.running_var": "backbone.stages.1.0.branch.0.bn.running_var",
        "layer3.0.downsample.layer.module.weight": "backbone.stages.2.0.shortcut.conv.weight",
        "fc1.bias": "backbone.fc.0.bias", "fc2.weight": "backbone.fc.2.weight"},
    "tet_vggsnn_cifar10dvs": {
        "features.9.fwd.module.1.weight": "backbone.features.9.bn.weight",
        "classifier.module.weight": "backbone.head.1.weight"},
    # published cell: ops in sorted edge order 0, 1, 2, 3, 7, 8 = node0<-s0, node0<-s1, node1<-s0, node1<-s1,
    # node2<-n0, node2<-n1; ours: edges.<node>.<k>, k by source.
    "spikedhs_cifar10_retrain_F48": {
        **{f"feature.cells.3._ops.{op}.conv1.weight": f"backbone.cells.3.edges.{slot}.conv.weight"
           for op, slot in enumerate(["0.0", "0.1", "1.0", "1.1", "2.0", "2.1"])},
        "feature.cells.0._ops.5.bn.running_mean": "backbone.cells.0.edges.2.1.bn.running_mean",
        "feature.stem0.snn_optimal.conv1.bias": "backbone.stem.conv.bias",
        "feature.auxiliary_head.conv2.conv1.weight": "backbone.aux_head.3.0.conv.weight",
        "feature.auxiliary_head.classifier.fc1.weight": "backbone.aux_head.5.weight",
        "classifier.bn.running_var": "backbone.head.4.running_var"},
}


@functools.lru_cache(maxsize=None)
def listing(stem: str) -> dict:
    return json.loads((SHARED / f"{stem}.json").read_text())


def up_keys(keys: list[str]) -> list[str]:
    """The `up` (lambda) entries a trained QCFS/SRP checkpoint adds to the ReLU listing: the activation
    after each BN, except a residual branch's second BN and a shortcut's (the block's `relu` follows the
    add), and after each hidden Linear of the classifier."""
    ups = []
    for name in keys:
        if not name.endswith(".running_mean"):
            continue
        head, _, index = name[: -len(".running_mean")].rpartition(".")
        if head.endswith("shortcut"):
            continue
        if head.endswith("residual_function") and index == "4":
            ups.append(head.rpartition(".")[0] + ".relu.up")
        else:
            ups.append(f"{head}.{int(index) + 1}.up")
    linears = [n for n in keys if n.startswith("classifier.") and n.endswith(".weight")]
    return ups + [f"classifier.{int(n.split('.')[1]) + 1}.up" for n in linears[:-1]]


def random_tensor(name: str, shape, dtype: str, device: str) -> torch.Tensor:
    if device == "meta":
        return torch.empty(shape, dtype=getattr(torch, dtype), device="meta")
    if dtype == "int64":
        return torch.randint(0, 1000, shape)
    if name.endswith(("running_var", ".up")):
        return torch.rand(shape) + 0.5
    return torch.randn(shape)


def official_state(stem: str, device: str = "cpu", with_up: bool = True) -> dict[str, torch.Tensor]:
    """A state dict with the listed keys and shapes (random values); an alias group shares one tensor."""
    data = listing(stem)
    canonical = {name: group[0] for group in data["aliases"] for name in group}
    made, state = {}, {}
    for name, shape, dtype in data["keys"]:
        first = canonical.get(name, name)
        if first not in made:
            made[first] = random_tensor(first, shape, dtype, device)
        state[name] = made[first]
    if with_up and CASES[stem][0] in ("qcfs", "srp"):
        state.update({key: random_tensor(key, [1], "float32", device) for key in up_keys(list(state))})
    return state


def official_parameters(stem: str) -> int:
    """Parameters of the JSON listing: distinct tensors, batch-norm statistics excluded."""
    data = listing(stem)
    aliases = {name for group in data["aliases"] for name in group[1:]}
    return sum(torch.Size(shape).numel() for name, shape, _ in data["keys"]
               if name not in aliases and not name.endswith(("running_mean", "running_var", "num_batches_tracked")))


def meta_import(stem: str, state: dict, **options):
    source, model, _ = CASES[stem]
    plan = plan_import(state, source, model, options)
    with torch.device("meta"):
        net = build_model(plan.config, plan.num_classes, trained_timesteps(plan.config))
    return plan, net, map_state(plan, net)


def test_every_listing_has_a_case():
    assert {p.stem for p in SHARED.glob("*.json")} == set(CASES)


def test_trained_qcfs_listings_gain_one_up_per_activation():
    assert len(up_keys([k for k, _, _ in listing("qcfs_vgg16_cifar10")["keys"]])) == EXTRA["vgg16"]
    assert len(up_keys([k for k, _, _ in listing("srp_resnet34_cifar10")["keys"]])) == EXTRA["resnet34"]


@pytest.mark.parametrize("stem", sorted(CASES))
def test_listing_maps_every_entry_exactly_once(stem):
    source, model, dataset = CASES[stem]
    official = official_state(stem, "meta")
    plan, net, mapped = meta_import(stem, official)
    assert (plan.config.model.name, plan.config.data.name) == (model, dataset)
    target = net.state_dict()
    assert list(mapped.state) == list(target)
    for ours, key in mapped.plan.items():  # every mapped entry is the official tensor itself
        assert mapped.state[ours] is official[key]
    placed = [id(official[key]) for key in mapped.plan.values()]
    dropped = {id(official[key]) for key in mapped.dropped}
    assert len(placed) == len(set(placed)) and not set(placed) & dropped
    assert set(placed) | dropped == {id(t) for t in official.values()}
    assert mapped.filled == [k for k in target if re.fullmatch(FILLED[source], k)]
    expected_dropped = [k for k in official if k.startswith("feature.stem0.") and "snn_optimal" not in k]
    assert mapped.dropped == expected_dropped and (source == "spikedhs") == bool(expected_dropped)
    ours = sum(p.numel() for p in net.parameters())
    assert ours - official_parameters(stem) == EXTRA[model]
    for key, our_key in SPOTS.get(stem, {}).items():
        assert mapped.plan[our_key] == key
    if source != "spikedhs":  # sequential networks: the official order of the layers is ours
        order = {key: i for i, key in enumerate(plan.state)}
        positions = [order[mapped.plan[k]] for k in target if k in mapped.plan and k.endswith(".weight")]
        assert positions == sorted(positions)


def test_tet_alias_rules_group_exactly_the_listed_aliases():
    official = official_state("tet_resnet19_cifar10", "meta")
    plan = plan_import(official, "tet", "resnet19")
    groups = {}
    for name, tensor in official.items():
        groups.setdefault(id(tensor), []).append(name)
    listed = sorted(sorted(g) for g in listing("tet_resnet19_cifar10")["aliases"])
    assert sorted(sorted(g) for g in groups.values() if len(g) > 1) == listed
    assert len(plan.state) == 124 and all(plan.state[g[0]] is official[g[0]] for g in groups.values())


def save_official(tmp_path, state, wrap=lambda s: s) -> Path:
    path = tmp_path / "official.pth"
    torch.save(wrap(state), path)
    return path


def check_checkpoint(path: Path, official: dict, source: str, model: str, **options):
    """Import ``path``, write and reload the checkpoint; every mapped entry equals its official tensor."""
    checkpoint = import_official(path, source, model, **options)
    out = path.parent / "imported.pt"
    save_checkpoint(checkpoint, out)
    net, config, state = load_trained(out)
    ours = net.state_dict()
    assert set(state["source"]["mapping"]) | set(state["source"]["filled"]) == set(ours)
    for our_key, key in state["source"]["mapping"].items():
        assert torch.equal(ours[our_key], official[key].to(ours[our_key].dtype)), our_key
    assert state["source"]["file"] == str(path.resolve())
    assert state["source"]["file_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert config.model.name == model
    return net, config, state


WRAPS = {
    "plain": lambda s: s,
    "state_dict, module.": lambda s: {"epoch": 3, "state_dict": {"module." + k: v for k, v in s.items()}},
    "net": lambda s: {"net": s, "acc": 91.5},
    "model": lambda s: {"model": {"module." + k: v for k, v in s.items()}},
}


@pytest.mark.parametrize("wrap", WRAPS)
def test_srp_resnet20_checkpoint_loads_and_matches_an_independent_forward(tmp_path, wrap):
    torch.manual_seed(0)
    official = official_state("srp_resnet20_cifar10")
    net, config, _ = check_checkpoint(save_official(tmp_path, official, WRAPS[wrap]), official, "srp", "resnet20")
    assert (config.model.neuron, config.model.neuron_kwargs["levels"], config.data.name) == ("qcfs", 4, "cifar10")
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(net(x), official_resnet20(official, x, levels=4), atol=1e-4)
        snn, _, steps = load_network(str(tmp_path / "imported.pt"), 4)
        assert steps == 4 and torch.isfinite(snn(x)).all()


def official_resnet20(sd: dict, x: torch.Tensor, levels: int) -> torch.Tensor:
    """The official QCFS ResNet-20 forward (spec qcfs_srp.md 1.1 and 1.4) on its own state dict."""

    def qcfs(z, up):
        return up * torch.clamp(torch.floor(z / up * levels + 0.5) / levels, 0, 1)

    def conv_bn(z, conv, bn, stride=1):
        z = F.conv2d(z, sd[f"{conv}.weight"], stride=stride, padding=sd[f"{conv}.weight"].shape[-1] // 2)
        return F.batch_norm(z, sd[f"{bn}.running_mean"], sd[f"{bn}.running_var"], sd[f"{bn}.weight"], sd[f"{bn}.bias"])

    x = qcfs(conv_bn(x, "conv1.0", "conv1.1"), sd["conv1.2.up"])
    for stage, stride in (("conv2_x", 1), ("conv3_x", 2), ("conv4_x", 2)):
        for block in range(3):
            p, s = f"{stage}.{block}", stride if block == 0 else 1
            r = conv_bn(x, f"{p}.residual_function.0", f"{p}.residual_function.1", s)
            r = qcfs(r, sd[f"{p}.residual_function.2.up"])
            r = conv_bn(r, f"{p}.residual_function.3", f"{p}.residual_function.4")
            short = conv_bn(x, f"{p}.shortcut.0", f"{p}.shortcut.1", s) if f"{p}.shortcut.0.weight" in sd else x
            x = qcfs(r + short, sd[f"{p}.relu.up"])
    return F.linear(x.mean((2, 3)), sd["fc.weight"], sd["fc.bias"])


def test_spikedhs_checkpoint_restores_the_stem_temperature(tmp_path):
    torch.manual_seed(0)
    official = official_state("spikedhs_cifar10_retrain_F48")
    path = save_official(tmp_path, official)
    net, config, state = check_checkpoint(path, official, "spikedhs", "spikedhs", stem_b=2.2)
    assert config.model.kwargs["base_channels"] == 48 and config.model.kwargs["auxiliary"] and config.timesteps == 6
    widths = {k: float(v) for k, v in net.state_dict().items() if k.endswith("surrogate.width")}
    assert widths.pop("backbone.stem.act.surrogate.width") == pytest.approx(2.2)
    assert set(widths.values()) == {3.0}  # node and pooling neurons: the official b = 3
    assert len(state["source"]["dropped"]) == 36
    net.timesteps = 1
    with torch.no_grad():
        assert net(torch.randn(1, 3, 8, 8)).shape == (1, 1, 10)


def test_tet_checkpoints_load_and_run(tmp_path):
    torch.manual_seed(0)
    official = official_state("tet_resnet19_cifar10")
    net, config, state = check_checkpoint(save_official(tmp_path, official), official, "tet", "resnet19", timesteps=2)
    assert config.timesteps == 2 and config.data.name == "cifar10"
    assert all(float(v) == 1.0 for k, v in net.state_dict().items() if k.endswith("surrogate.width"))
    with torch.no_grad():
        assert net(torch.randn(1, 3, 8, 8)).shape == (2, 1, 10)
    official = official_state("tet_vggsnn_cifar10dvs")
    net, config, _ = check_checkpoint(save_official(tmp_path, official), official, "tet", "vggsnn")
    assert config.data.name == "cifar10dvs" and config.timesteps == 10


@pytest.mark.parametrize("stem, options", [("srp_resnet20_cifar100", {}), ("tet_resnet19_cifar10", {}),
                                           ("spikedhs_cifar10_retrain_F48", {"stem_b": 1.4})])
def test_exporting_back_to_official_names_and_reimporting_gives_the_same_checkpoint(stem, options):
    torch.manual_seed(0)
    source, model, _ = CASES[stem]
    first = import_official(official_state(stem), source, model, **options)
    # official names again, without aliases and dropped entries
    back = {key: first["model"][ours] for ours, key in first["source"]["mapping"].items()}
    again = import_official(back, source, model, **options)
    assert again["source"]["mapping"] == first["source"]["mapping"] and again["config"] == first["config"]
    assert all(torch.equal(again["model"][k], v) for k, v in first["model"].items())


def test_a_relu_checkpoint_needs_the_threshold_option():
    official = official_state("srp_resnet20_cifar10", with_up=False)
    with pytest.raises(ValueError, match=r"no value for 'stem\.0\.act\.lam': give the threshold option"):
        import_official(official, "srp", "resnet20")
    checkpoint = import_official(official, "srp", "resnet20", threshold=2.0, levels=8)
    lams = [v for k, v in checkpoint["model"].items() if k.endswith(".lam")]
    assert len(lams) == EXTRA["resnet20"] and all(float(v) == 2.0 for v in lams)
    assert checkpoint["config"]["model"]["neuron_kwargs"]["levels"] == 8


def one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        call(*args, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_unmatched_keys_and_shapes_are_refused_with_one_line_naming_them():
    official = official_state("srp_resnet20_cifar10")
    missing = {k: v for k, v in official.items() if k != "conv3_x.1.residual_function.3.weight"}
    assert "no entry for the resnet20 model's 'stages.1.1.branch.1.conv.weight'" in one_line_error(
        import_official, missing, "srp", "resnet20")
    extra = {**official, "conv2_x.0.extra.weight": torch.zeros(3)}
    assert "'conv2_x.0.extra.weight' is not part of the official layout" in one_line_error(
        import_official, extra, "srp", "resnet20")
    deeper = {**official, "conv5_x.0.residual_function.0.weight": torch.zeros(3)}
    assert "'conv5_x.0.residual_function.0.weight' maps to 'stages.3.0.branch.0.conv.weight'" in one_line_error(
        import_official, deeper, "srp", "resnet20")
    wrong = {**official, "conv2_x.1.residual_function.0.weight": torch.zeros(16, 16, 1, 1)}
    assert ("shape mismatch at checkpoint key 'conv2_x.1.residual_function.0.weight' [16, 16, 1, 1]: "
            "the resnet20 model's 'stages.0.1.branch.0.conv.weight' is [16, 16, 3, 3]") in one_line_error(
        import_official, wrong, "srp", "resnet20")
    spikedhs = official_state("spikedhs_cifar10_retrain_F48", "meta")
    del spikedhs["feature.cells.2._ops.4.bn.weight"]
    plan = plan_import(spikedhs, "spikedhs", "spikedhs")
    with torch.device("meta"):
        net = build_model(plan.config, plan.num_classes, 1)
    assert "no entry for the spikedhs model's 'backbone.cells.2.edges.2.0.bn.weight'" in one_line_error(
        map_state, plan, net)
    no_classifier = {k: v for k, v in official.items() if not k.startswith("fc.")}
    assert "no 'fc.weight' entry" in one_line_error(import_official, no_classifier, "srp", "resnet20")


def test_aliases_that_disagree_are_refused():
    official = official_state("tet_resnet19_cifar10")
    official["layer1.0.conv2_s.layer.module.weight"] = official["layer1.0.conv2.weight"] + 1
    assert ("'layer1.0.conv2.weight' and 'layer1.0.conv2_s.layer.module.weight' name one tensor of the official "
            "model but differ") in one_line_error(plan_import, official, "tet", "resnet19")


def test_bad_sources_models_options_and_files_are_one_line(tmp_path):
    official = official_state("srp_resnet20_cifar10")
    assert "unknown source 'snntorch'" in one_line_error(import_official, official, "snntorch", "resnet20")
    assert "srp has no official 'resnet19' model" in one_line_error(import_official, official, "srp", "resnet19")
    assert "option 'stem_b' does not apply to srp resnet20" in one_line_error(
        import_official, official, "srp", "resnet20", stem_b=2.0)
    assert "data set cifar100 has 100 classes, the checkpoint's classifier 10" in one_line_error(
        import_official, official, "srp", "resnet20", dataset="cifar100")
    assert "no state dict found" in one_line_error(import_official, {"epoch": 3, "acc": 0.9}, "srp", "resnet20")
    assert "does not exist" in one_line_error(import_official, tmp_path / "missing.pth", "srp", "resnet20")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    assert "not readable with torch.load(weights_only=True)" in one_line_error(
        import_official, tmp_path / "garbage.pth", "srp", "resnet20")
    torch.save({"args": argparse.Namespace(lr=0.1), "state_dict": official}, tmp_path / "pickled.pth")
    assert "weights_only=True): it pickles objects besides tensors" in one_line_error(
        import_official, tmp_path / "pickled.pth", "srp", "resnet20")


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="spikeforge")
    import_weights.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_writes_the_checkpoint_and_refuses_to_overwrite(tmp_path, capsys):
    torch.manual_seed(0)
    path = save_official(tmp_path, official_state("srp_resnet20_cifar100"))
    out = tmp_path / "out" / "resnet20.pt"
    argv = ["import-weights", "--from", "srp", "--model", "resnet20", str(path), str(out), "--levels", "4",
            "--data-root", str(tmp_path / "data")]
    assert run_cli(argv) == 0
    assert "resnet20 for cifar100 (100 classes)" in capsys.readouterr().out
    net, config, _ = load_trained(out)
    assert config.data.root == str(tmp_path / "data") and config.data.name == "cifar100"
    with pytest.raises(ValueError, match="exists: pass --overwrite"):
        run_cli(argv)
    assert run_cli(argv + ["--overwrite"]) == 0
    with pytest.raises(ValueError, match="option 'stem_b' does not apply to srp resnet20"):
        run_cli(argv + ["--overwrite", "--stem-b", "2"])
