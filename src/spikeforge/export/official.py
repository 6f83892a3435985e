"""Import the published checkpoints of the seed papers into the spikeforge zoo.

``import_official(path_or_state_dict, source, model, **options)`` maps an official state dict onto
``models.create(model, ...)`` and returns a spikeforge checkpoint (``model``, ``config``,
``num_classes`` and ``source`` provenance) that ``load_trained``, ``spikeforge evaluate``, ``convert``,
``energy`` and ``export`` read; write it with :func:`spikeforge.runtime.checkpoint.save_checkpoint`
(``spikeforge import-weights`` does both).

One engine (:func:`map_state`) and one small :class:`Layout` table per official model:

- the input is read with ``torch.load(weights_only=True)``; a state dict wrapped under
  ``state_dict`` / ``model`` / ``net`` is unwrapped, and a ``module.`` prefix on every key
  (DataParallel / DDP) is removed. The official scripts save ``model.state_dict()`` (QCFS, SRP,
  SpikeDHS's ``train.py``; prefixed when the model was wrapped) or, for TET, the unwrapped module's
  state dict or ``{"model": ..., "optimizer": ..., "epoch": ...}``;
- *aliases* (one tensor registered under several names) must hold equal values; one is kept;
- *rules* rename official module paths to ours (the first full match wins);
- *dropped* official entries have no counterpart and are discarded, by name;
- *filled* entries of our model are not in the official file: they keep the built model's value,
  or take an option's value;
- anything else refuses with one line naming the first unmatched key or shape mismatch.

Facts per source (from the papers: SpikeDHS, Che et al., NeurIPS 2022; TET, Deng et al., ICLR 2022;
QCFS, Bu et al., ICLR 2022; SRP, Hao et al., AAAI 2023; key names from the official code):

- ``spikedhs`` (Huawei-BIC/SpikeDHS retrain network, ``model="spikedhs"``): the stem is
  ``feature.stem0.snn_optimal``; its five DGS copies ``snn_8 .. snn_12`` and ``alpha_diffb`` are
  dropped (search-time state). Op ``j`` of a cell is the ``j``-th kept edge in sorted edge-index order
  of the genotype, i.e. node ``j // 2``'s input ``j % 2`` by source, as ours. The stem's DGS temperature ``b`` is a
  plain attribute of the official module, not saved: option ``stem_b`` (default 3, the official
  initial value; the shipped ``train.sh`` has DGS off). Other surrogate temperatures are the
  operations' fixed ``b`` and node shifts are 0 (filled). ``base_channels`` comes from the stem, the
  auxiliary head is mapped when present. Parameters: official 14,792,705 with the auxiliary head
  (F=48, published genotype), ours 14,771,100: the dropped 5 x 4,320 + 5 = 21,605.
- ``tet`` (Gus-Lab/temporal_efficient_training; ``resnet19``, ``vggsnn``): ResNet-19 registers each
  conv/BN twice (``conv1`` = ``conv1_s.layer.module``; ``bn1.bn`` = ``bn1.seqbn.module`` =
  ``conv1_s.bn.bn`` = ``conv1_s.bn.seqbn.module``): 415 keys, 124 tensors, 12,630,858 parameters,
  equal to ours. VGGSNN: 9,271,498, equal. TET's LIF has no state: surrogate widths are filled (γ=1).
- ``qcfs`` / ``srp`` (putshua/SNN_conversion_QCFS, hzc1208/ANN2SNN_SRP: one layout; ``vgg16``,
  ``resnet18``, ``resnet20``, ``resnet34``): the QCFS threshold λ is the activation's ``up`` of shape
  [1]; a checkpoint without ``up`` (the ReLU source ANN) needs option ``threshold``. ``L`` is not saved:
  option ``levels`` (default 4; 8 on ImageNet, as the authors state). Dropout and pools have no
  entries. Ours has one λ per activation, which a trained checkpoint's ``up`` entries match one to one
  (the ReLU ANN has 15 / 17 / 19 / 33 parameters fewer for VGG-16 / ResNet-18 / -20 / -34). ImageNet
  VGG-16 (classifier input 25,088) gets ``head="imagenet"``; ImageNet ResNet-34 keeps the official
  3x3 stride-1 stem (``stem="cifar"``).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from ..core.time import SpikingNetwork
from ..data.registry import dataset_info
from ..models.spikedhs.genotype import load_genotype
from ..models.vgg import VGG_CONFIGS, P
from ..runtime.config import from_dict, list_recipes, load_recipe, to_dict
from ..train.config import TrainConfig
from ..train.trained import build_model, trained_timesteps

__all__ = ["SOURCES", "Layout", "Plan", "Mapped", "layout_for", "read_official", "plan_import", "map_state",
           "import_official"]

#: Keys under which a saved checkpoint may wrap its state dict, tried in this order.
WRAPPERS = ("state_dict", "model", "net")
DATAPARALLEL_PREFIX = "module."

#: Data set of an image classifier by its number of classes.
_BY_CLASSES = {10: "cifar10", 100: "cifar100", 1000: "imagenet"}
#: ``(official module-path regex, our module path or a callable of the match)``.
Rule = tuple[str, "str | Callable[[re.Match], str]"]


@dataclass(frozen=True)
class Layout:
    """How one official model's state dict maps onto a zoo model."""

    model: str  # zoo name
    recipe: str  # shipped recipe with the training settings, ``{model}`` and ``{dataset}`` filled in (if it exists)
    classes_key: str  # official key whose first dimension is the number of classes
    section: Callable[[dict, str, dict], dict]  # (state, dataset, options) -> the config's model section
    timesteps: int  # default T of the written config
    rules: tuple[Rule, ...]
    leaves: Mapping[str, str] = field(default_factory=dict)  # official parameter name -> ours
    aliases: tuple[tuple[str, str], ...] = ()  # (regex, replacement) to the canonical name, in order
    dropped: tuple[str, ...] = ()  # regexes of official keys without counterpart
    fills: tuple[tuple[str, str | None], ...] = ()  # (regex of our key, option giving its value or None)
    options: Mapping[str, tuple[Any, Callable]] = field(default_factory=dict)  # name -> (default, converter)
    dataset: Callable[[int], str] = lambda classes: _BY_CLASSES.get(classes, "")  # default data set ("": unknown)


# ------------------------------------------------------------------ tables
_CBA = ("conv", "bn", "act")  # positions in a conv-BN-activation sequence


def _stage(m: re.Match, first: int) -> str:
    """``stages.<stage>.<block>`` from a match whose groups 1, 2 are the official stage and block."""
    return f"stages.{int(m[1]) - first}.{m[2]}"


def _vgg_blocks(config: list) -> list[list[int]]:
    """Feature indices of the convs of each pool-terminated block of a VGG config."""
    blocks, current = [], []
    for index, item in enumerate(config):
        if item == P:
            blocks.append(current)
            current = []
        else:
            current.append(index)
    return blocks


_VGG16_BLOCKS = _vgg_blocks(VGG_CONFIGS["vgg16"])
_VGG16_HEAD = {1: 0, 2: 1, 4: 2, 5: 3, 7: 4}  # official classifier index -> ours (Flatten and Dropouts have no entries)


def _qcfs_section(model: str, kwargs: Callable[[dict], dict]):
    """The model section of a QCFS ANN; ``L`` is not saved (default 4, 8 on ImageNet as the authors state)."""

    def section(state: dict, dataset: str, options: dict) -> dict:
        levels = options["levels"] or (8 if dataset == "imagenet" else 4)
        return {"name": model, "neuron": "qcfs", "neuron_kwargs": {"levels": levels, "threshold": 8.0},
                "kwargs": kwargs(state)}

    return section


def _qcfs_layout(model: str, rules: tuple[Rule, ...], classes_key: str, kwargs=lambda state: {}) -> Layout:
    """QCFS and SRP share their models (and so their layouts): ``up`` is our ``lam``."""
    return Layout(model, "qcfs-{model}-{dataset}", classes_key, _qcfs_section(model, kwargs), 1, rules,
                  leaves={"up": "lam"}, fills=((r".*\.lam", "threshold"),),
                  options={"levels": (None, int), "threshold": (None, float)})


_QCFS_RESNET = (
    (r"conv1\.([0-2])", lambda m: f"stem.0.{_CBA[int(m[1])]}"),
    (r"conv(\d)_x\.(\d+)\.residual_function\.([0-4])",
     lambda m: f"{_stage(m, 2)}.branch.{int(m[3]) // 3}.{_CBA[int(m[3]) % 3]}"),
    (r"conv(\d)_x\.(\d+)\.shortcut\.([01])", lambda m: f"{_stage(m, 2)}.shortcut.{_CBA[int(m[3])]}"),
    (r"conv(\d)_x\.(\d+)\.relu", lambda m: f"{_stage(m, 2)}.act"),
    (r"fc", "fc.0"),
)
_QCFS_VGG16 = (
    (r"layer([1-5])\.(\d+)",
     lambda m: f"features.{_VGG16_BLOCKS[int(m[1]) - 1][int(m[2]) // 4]}.{_CBA[int(m[2]) % 4]}"),
    (r"classifier\.(\d)", lambda m: f"head.2.{_VGG16_HEAD[int(m[1])]}"),
)
_QCFS = {
    "vgg16": _qcfs_layout("vgg16", _QCFS_VGG16, "classifier.7.weight", lambda state: {
        "head": "cifar" if state["classifier.1.weight"].shape[1] == 512 else "imagenet", "pool": "avg"}),
    "resnet18": _qcfs_layout("resnet18", _QCFS_RESNET, "fc.weight", lambda state: {"stem": "cifar"}),
    "resnet20": _qcfs_layout("resnet20", _QCFS_RESNET, "fc.weight"),
    "resnet34": _qcfs_layout("resnet34", _QCFS_RESNET, "fc.weight", lambda state: {"stem": "cifar"}),
}

#: TET's LIF (Deng et al., ICLR 2022, and its official code): leak 0.5, threshold 1, strict firing,
#: triangle surrogate gamma 1.
_TET_LIF = {"decay": 0.5, "v_th": 1.0, "strict": True, "surrogate": {"name": "triangle", "gamma": 1.0}}


def _tet_section(model: str):
    """The model section of a TET network: TET's LIF, the zoo's default architecture options."""
    return lambda state, dataset, options: {"name": model, "neuron": "lif", "neuron_kwargs": dict(_TET_LIF),
                                            "kwargs": {}}


_TET = {
    "resnet19": Layout(
        "resnet19", "tet-{model}-{dataset}", "fc2.weight", _tet_section("resnet19"), 4,
        rules=(
            (r"conv1", "stem.0.conv"),
            (r"bn1\.bn", "stem.0.bn"),
            (r"layer(\d)\.(\d+)\.conv([12])", lambda m: f"{_stage(m, 1)}.branch.{int(m[3]) - 1}.conv"),
            (r"layer(\d)\.(\d+)\.bn([12])\.bn", lambda m: f"{_stage(m, 1)}.branch.{int(m[3]) - 1}.bn"),
            (r"layer(\d)\.(\d+)\.downsample\.layer\.module", lambda m: f"{_stage(m, 1)}.shortcut.conv"),
            (r"layer(\d)\.(\d+)\.downsample\.bn\.bn", lambda m: f"{_stage(m, 1)}.shortcut.bn"),
            (r"fc1", "fc.0"),
            (r"fc2", "fc.2"),
        ),
        aliases=(
            (r"(.*)conv(\d)_s\.layer\.module\.(\w+)", r"\1conv\2.\3"),
            (r"(.*)conv(\d)_s\.bn\.(.+)", r"\1bn\2.\3"),
            (r"(.*)\.seqbn\.module\.(\w+)", r"\1.bn.\2"),
            (r"fc(\d)_s\.layer\.module\.(\w+)", r"fc\1.\2"),
        ),
        fills=((r".*\.surrogate\.width", None),),
    ),
    "vggsnn": Layout(
        "vggsnn", "tet-{model}-{dataset}", "classifier.module.weight", _tet_section("vggsnn"), 10,
        rules=(
            (r"features\.(\d+)\.fwd\.module\.([01])", lambda m: f"features.{m[1]}.{_CBA[int(m[2])]}"),
            (r"classifier\.module", "head.1"),
        ),
        fills=((r".*\.surrogate\.width", None),),
        dataset=lambda classes: "cifar10dvs",
    ),
}


def _spikedhs_section(state: dict, dataset: str, options: dict) -> dict:
    """The model section of a SpikeDHS retrain network: the genotype (not saved: an option), ``F`` and the
    input channels from the stem, the auxiliary head when the checkpoint has one."""
    genotype = options["genotype"]
    stem = state["feature.stem0.snn_optimal.conv1.weight"]
    kwargs = {"genotype": genotype.to_dict(), "base_channels": stem.shape[0] // genotype.nodes,
              "in_channels": stem.shape[1], "auxiliary": any(k.startswith("feature.auxiliary_head.") for k in state)}
    return {"name": "spikedhs", "neuron": "lif", "neuron_kwargs": {}, "kwargs": kwargs}


_SPIKEDHS = Layout(
    "spikedhs", "spikedhs-retrain-{dataset}", "classifier.fc1.weight", _spikedhs_section, 6,
    rules=(
        (r"feature\.stem0\.snn_optimal\.conv1", "stem.conv"),
        (r"feature\.stem0\.snn_optimal\.bn", "stem.bn"),
        # op j is the j-th kept edge by sorted edge index: edges are numbered node by node and, in a node, by
        # source, as ours are (two per node), so op j is node j // 2's input j % 2 whatever the genotype
        (r"feature\.cells\.(\d+)\._ops\.(\d+)\.(conv1|bn)",
         lambda m: f"cells.{m[1]}.edges.{int(m[2]) // 2}.{int(m[2]) % 2}.{'bn' if m[3] == 'bn' else 'conv'}"),
        (r"feature\.auxiliary_head\.conv([12])\.(conv1|bn)",
         lambda m: f"aux_head.{int(m[1]) + 1}.0.{'bn' if m[2] == 'bn' else 'conv'}"),
        (r"feature\.auxiliary_head\.classifier\.fc1", "aux_head.5"),
        (r"feature\.auxiliary_head\.classifier\.bn", "aux_head.6"),
        (r"classifier\.fc1", "head.3"),
        (r"classifier\.bn", "head.4"),
    ),
    dropped=(r"feature\.stem0\.snn_\d+\..+", r"feature\.stem0\.alpha_diffb"),
    fills=((r"stem\.act\.surrogate\.width", "stem_b"), (r".*\.surrogate\.width", None), (r".*\.shift", None)),
    options={"genotype": ("spikedhs_cifar", load_genotype), "stem_b": (3.0, float)},
)

_LAYOUTS: dict[str, dict[str, Layout]] = {"spikedhs": {"spikedhs": _SPIKEDHS}, "tet": _TET, "qcfs": _QCFS, "srp": _QCFS}
#: Official code bases ``import_official`` reads.
SOURCES = tuple(_LAYOUTS)
#: Options every layout takes: name -> (default, converter).
_COMMON_OPTIONS = {"timesteps": (None, int), "dataset": (None, str), "data_root": (None, str)}


def layout_for(source: str, model: str) -> Layout:
    """The layout of ``source``'s ``model``; one-line ValueError naming the choices otherwise."""
    if source not in _LAYOUTS:
        raise ValueError(f"unknown source {source!r}: expected one of {', '.join(SOURCES)}")
    models = _LAYOUTS[source]
    if model not in models:
        raise ValueError(f"{source} has no official {model!r} model: expected one of {', '.join(models)}")
    return models[model]


# ------------------------------------------------------------------ reading
def read_official(checkpoint) -> tuple[dict[str, Tensor], dict]:
    """The state dict in ``checkpoint`` (a path, or an object already loaded) and its origin
    ``{"file", "file_sha256"}`` (both None for an object)."""
    if not isinstance(checkpoint, (str, os.PathLike)):
        return _strip_prefix(_unwrap(checkpoint)), {"file": None, "file_sha256": None}
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"official checkpoint {path} does not exist")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch file, or it pickles more than tensors
        if "Weights only load failed" in str(err):
            reason = ("it pickles objects besides tensors and containers (if you trust the file, load it "
                      "yourself and pass its state dict)")
        else:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{path}: not readable with torch.load(weights_only=True): {reason}") from None
    return _strip_prefix(_unwrap(loaded)), {"file": str(path.resolve()), "file_sha256": _file_sha256(path)}


def _unwrap(obj) -> dict[str, Tensor]:
    """A mapping of tensors, or the one under the first of :data:`WRAPPERS` that holds one."""
    if isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in WRAPPERS:
            if isinstance(obj.get(key), Mapping):
                return _unwrap(obj[key])
    found = f"keys {', '.join(map(str, list(obj)[:5]))}" if isinstance(obj, Mapping) else type(obj).__name__
    raise ValueError(f"no state dict found (a mapping of tensors, or one under {', '.join(WRAPPERS)}); got {found}")


def _strip_prefix(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Remove the ``module.`` prefix that DataParallel / DDP put on every key."""
    if all(k.startswith(DATAPARALLEL_PREFIX) for k in state):
        return {k[len(DATAPARALLEL_PREFIX):]: v for k, v in state.items()}
    return state


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _merge_aliases(state: dict[str, Tensor], aliases, what: str) -> dict[str, Tensor]:
    """One entry per tensor under its canonical name; the names of one tensor must hold equal values."""
    merged, first = {}, {}
    for key, tensor in state.items():
        name = key
        for pattern, replacement in aliases:
            name = re.sub(f"^{pattern}$", replacement, name)
        if name not in merged:
            merged[name], first[name] = tensor, key
        elif not (tensor is merged[name] or (tensor.shape == merged[name].shape and torch.equal(tensor, merged[name]))):
            raise ValueError(f"{what}: {first[name]!r} and {key!r} name one tensor of the official model but differ")
    return merged


# ------------------------------------------------------------------ planning and mapping
@dataclass
class Plan:
    """What an import builds: the official entries under canonical names, the options, the config."""

    what: str  # "<source> <model>", for messages
    layout: Layout
    options: dict
    state: dict[str, Tensor]
    num_classes: int
    config: Any  # TrainConfig


@dataclass
class Mapped:
    """Our state dict from the official one: ``plan`` (our key -> official key), what was dropped and filled."""

    state: dict[str, Tensor]
    plan: dict[str, str]
    dropped: list[str]
    filled: list[str]


def _resolve_options(layout: Layout, options: dict, what: str) -> dict:
    known = {**_COMMON_OPTIONS, **layout.options}
    unknown = [name for name in options if name not in known]
    if unknown:
        raise ValueError(f"option {unknown[0]!r} does not apply to {what}: options are {', '.join(known)}")
    resolved = {}
    for name, (default, convert) in known.items():
        value = default if options.get(name) is None else options[name]
        try:
            resolved[name] = None if value is None else convert(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"option {name}={value!r}: {str(err).splitlines()[0]}") from None
    return resolved


def _dataset(layout: Layout, classes: int, options: dict, what: str) -> str:
    name = options["dataset"] or layout.dataset(classes)
    if not name:
        raise ValueError(f"{what}: no data set is known for {classes} classes: give the dataset option")
    info = dataset_info(name)
    if info.num_classes != classes:
        raise ValueError(f"{what}: data set {info.name} has {info.num_classes} classes, "
                         f"the checkpoint's classifier {classes}")
    return info.name


def _config(layout: Layout, section: dict, dataset: str, options: dict, origin: str):
    """The written config: the shipped recipe of this model and data set when there is one (training
    settings for fine-tuning), with the imported model section, ``T`` and data set."""
    recipe = layout.recipe.format(model=layout.model, dataset=dataset)
    data = load_recipe(recipe) if recipe in list_recipes() else {}
    settings = f" (training settings of recipe {recipe})" if data else ""
    data.update(model=section, timesteps=options["timesteps"] or layout.timesteps, stages=[],
                description=f"official weights imported from {origin}{settings}")
    data["data"] = {**data.get("data", {}), "name": dataset}
    if options["data_root"]:
        data["data"]["root"] = options["data_root"]
    return from_dict(TrainConfig, data)


def plan_import(state: dict[str, Tensor], source: str, model: str, options: dict | None = None,
                origin: str = "a state dict") -> Plan:
    """Canonical official entries, resolved options, class count and the config of the import."""
    layout = layout_for(source, model)
    what = f"{source} {model}"
    opts = _resolve_options(layout, dict(options or {}), what)
    state = _merge_aliases(state, layout.aliases, what)
    if layout.classes_key not in state:
        raise ValueError(f"{what}: the checkpoint has no {layout.classes_key!r} entry (the classifier): "
                         f"is it an official {what} state dict?")
    classes = int(state[layout.classes_key].shape[0])
    dataset = _dataset(layout, classes, opts, what)
    try:
        section = layout.section(state, dataset, opts)
    except KeyError as err:
        raise ValueError(f"{what}: the checkpoint has no {err.args[0]!r} entry: "
                         f"is it an official {what} state dict?") from None
    config = _config(layout, section, dataset, opts, origin)
    return Plan(what, layout, opts, state, classes, config)


def _rename(key: str, layout: Layout) -> str | None:
    """Our name (without the time wrapper's prefix) of an official key; None when no rule places it."""
    path, _, leaf = key.rpartition(".")
    for pattern, replacement in layout.rules:
        match = re.fullmatch(pattern, path)
        if match:
            try:
                new = replacement if isinstance(replacement, str) else replacement(match)
            except (IndexError, KeyError):  # an index outside the official layout
                return None
            return f"{new}.{layout.leaves.get(leaf, leaf)}"
    return None


def map_state(plan: Plan, net: nn.Module) -> Mapped:
    """The official entries as ``net``'s state dict (its own tensors for the filled entries).

    One-line ValueError at the first official key that no rule places, that lands on no entry of
    ``net`` or on one of another shape, or at the first entry of ``net`` left without a value.
    """
    layout, what = plan.layout, plan.what
    prefix = "backbone." if isinstance(net, SpikingNetwork) else ""
    target = net.state_dict()
    mapped = Mapped({}, {}, [], [])
    for key, tensor in plan.state.items():
        if any(re.fullmatch(p, key) for p in layout.dropped):
            mapped.dropped.append(key)
            continue
        name = _rename(key, layout)
        if name is None:
            raise ValueError(f"{what}: checkpoint key {key!r} is not part of the official layout")
        ours = prefix + name
        if ours not in target:
            raise ValueError(f"{what}: checkpoint key {key!r} maps to {ours!r}, which the {layout.model} model has not")
        if tensor.shape != target[ours].shape:
            raise ValueError(f"{what}: shape mismatch at checkpoint key {key!r} {list(tensor.shape)}: "
                             f"the {layout.model} model's {ours!r} is {list(target[ours].shape)}")
        mapped.state[ours] = tensor.to(target[ours].dtype)
        mapped.plan[ours] = key
    for ours, tensor in target.items():
        if ours not in mapped.state:
            mapped.state[ours] = _fill(ours, ours[len(prefix):], tensor, plan)
            mapped.filled.append(ours)
    return Mapped({k: mapped.state[k] for k in target}, mapped.plan, mapped.dropped, mapped.filled)


def _fill(key: str, name: str, built: Tensor, plan: Plan) -> Tensor:
    """The value of our entry ``key`` (``name`` inside the time wrapper) that the official file does not
    hold: the built one, or an option's."""
    for pattern, option in plan.layout.fills:
        if re.fullmatch(pattern, name):
            if option is None:
                return built
            if plan.options[option] is None:
                raise ValueError(f"{plan.what}: the checkpoint has no value for {key!r}: give the {option} option")
            return torch.full_like(built, plan.options[option])
    raise ValueError(f"{plan.what}: the checkpoint has no entry for the {plan.layout.model} model's {key!r}")


def import_official(checkpoint, source: str, model: str, **options) -> dict:
    """A spikeforge checkpoint from an official one (a path or a loaded object).

    Args:
        checkpoint: a file (read with ``torch.load(weights_only=True)``), a state dict, or a dict
            wrapping one under ``state_dict`` / ``model`` / ``net``; keys may carry ``module.``.
        source: ``"spikedhs"``, ``"tet"``, ``"qcfs"`` or ``"srp"`` (these two build a ``neuron="qcfs"`` model:
            ``import spikeforge.convert`` first, which registers it).
        model: the zoo model of the official network (see the module doc per source).
        options: ``timesteps`` (T of the written config), ``dataset`` (default: from the class count),
            ``data_root``; QCFS/SRP: ``levels``, ``threshold``; SpikeDHS: ``genotype``, ``stem_b``.

    Returns:
        ``{"model", "config", "num_classes", "source"}``; ``source`` records the format, the file and
        its SHA-256, and which entries were mapped (ours -> official), dropped and filled.
    """
    state, origin = read_official(checkpoint)
    plan = plan_import(state, source, model, options, origin["file"] or "a state dict")
    net = build_model(plan.config, plan.num_classes, trained_timesteps(plan.config))
    mapped = map_state(plan, net)
    net.load_state_dict(mapped.state)
    return {"model": net.state_dict(), "config": to_dict(plan.config), "num_classes": plan.num_classes,
            "source": {"format": source, "model": model, **origin, "mapping": mapped.plan,
                       "dropped": mapped.dropped, "filled": mapped.filled}}
