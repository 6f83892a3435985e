"""DGS: differentiable surrogate-gradient search (SpikeDHS, Che et al., NeurIPS 2022).

DGS tunes the surrogate temperature ``b`` (the width ``w`` of any
:class:`~spikeforge.surrogate.Surrogate`; Dspike's ``b`` in the paper) of
chosen spiking layers while a model trains. It works with any model whose
searchable layers are modules with attributes ``conv`` (``nn.Conv2d`` or
``nn.Linear``), ``bn`` (a batch norm or ``nn.Identity``) and ``act`` (a
:class:`~spikeforge.SpikingNeuron` with a fixed surrogate width), applied in
that order, e.g. :class:`spikeforge.models.layers.ConvBNAct`, and the nodes of
retrained SpikeDHS cells (:class:`NodeUnit`: the node's temperature ``b``
offsets the temperatures of all its edges, which are copied together and
mixed with one ``alpha``; the paper's "every layer" for SpikeDHS networks).

A *round* (``DGS.run_round``, every ``period`` epochs from epoch ``period`` on)
swaps each searched layer's ``conv`` for a :class:`CandidateMixer` holding
``K = len(deltas)`` copies of its ``(conv, bn)`` and mixing logits ``alpha``
(its ``bn`` becomes ``nn.Identity``). For each of ``minibatches`` training
batches:

1. every copy restarts from the layer's weights and ``alpha = 1e-3``;
2. each copy ``k`` takes one SGD step alone, the layers running copy ``k``
   with temperature ``b + deltas[k]``;
3. ``alpha`` takes ``K`` Adam steps in *combine* mode, where the neuron's
   input current is ``sum_k softmax(alpha)_k bn_k(conv_k(x))`` and its
   temperature is ``b``; ``softmax(alpha)`` is added to a per-layer score
   after each.

Then ``b <- clamp(b + deltas[argmax score], b_min, b_max)`` per layer. All
searched layers are in the same mode at the same time, each with its own
copies and ``alpha`` (the paper's Algorithm 1, with the official code's update rules applied per layer).

Fixes of the official code: combine mode runs the layer's own neuron, so the
mixed current sees the ordinary leak and reset (the code's combine mode has
neither); the copies have their own optimisers, so nothing else moves (the code
steps the shared optimiser, whose momentum and weight decay reach frozen
parameters); the main model's parameters and buffers (BN running statistics
included) are snapshotted and restored bit for bit, and its parameters are
frozen during the round. Which layers are searched is a choice: ``"stem"``
(the official code), ``"all"`` (the paper: surrogates optimised layer-wise) or
a list of module names.

Step order: the official code alternates (copy ``k`` steps, then one alpha
step, for each ``k``; ``step_order="interleaved"``). At the alpha step after
copy ``k`` the copies ``> k`` have not been trained yet, so they look worse and
the scores rank the candidates by position: ``b`` then moves by ``deltas[0]``
whatever the data (tests/search/test_dgs.py shows it). The default
``"candidates_first"`` trains every copy before the alpha steps, so alpha
compares copies that each took one step.

``b`` lives where it always does, in the surrogate's ``width`` buffer, so it is
part of the model's ``state_dict`` and checkpoints. The mixers, the copies and
the optimisers (SGD per copy, Adam on alpha) exist for one round; their states
carry over between the round's minibatches, as in the official code. Unlike the
official code they start afresh at every round (a deliberate difference): the
copies restart from the layer's weights before every minibatch, and between two
rounds the model trains for ``period`` epochs, so momentum and Adam moments from
the last round describe a model that no longer exists; starting afresh also keeps
a round a function of (model, batches, ``b``) alone, so checkpoints need no DGS
optimiser state for an exact resume.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from itertools import islice

import torch
from torch import Tensor, nn

from ..core.neuron import SpikingNeuron
from ..models.spikedhs.cells import SpikeDHSCell
from ..runtime.divergence import TrainingDiverged
from ..runtime.fit import Callback, FitLoop
from ..train.callbacks import register_section_callback

__all__ = [
    "DEFAULT_DELTAS",
    "COMBINE",
    "STEP_ORDERS",
    "CandidateMixer",
    "DGSCallback",
    "UnitMixers",
    "LayerUnit",
    "NodeUnit",
    "DGS",
    "find_searchable_layers",
    "unsearchable_reason",
]

#: Temperature offsets of the candidates (the official code's five, around the current ``b``).
DEFAULT_DELTAS: tuple[float, ...] = (-0.4, -0.2, 0.0, 0.2, 0.4)
#: Mode of a :class:`CandidateMixer` that mixes all copies.
COMBINE = "combine"
#: Value the mixing logits restart from at every minibatch.
ALPHA_INIT = 1e-3
#: Orders of the steps within a minibatch (see :class:`DGS`).
STEP_ORDERS = ("candidates_first", "interleaved")


# ----------------------------------------------------------------- layers
class LayerUnit:
    """A searchable conv-bn-act layer: ``b`` is its neuron's surrogate width, its ``(conv, bn)`` is copied."""

    def __init__(self, layer: nn.Module):
        self.layer = layer
        self.weighted = [layer]  # modules whose (conv, bn) the candidates copy

    def temperature(self) -> float:
        return float(self.layer.act.surrogate.width)

    def set_temperature(self, b: float) -> None:
        self.layer.act.surrogate.set_width(b)

    def limits(self, b_min: float, b_max: float) -> tuple[float, float]:
        """Bounds of ``b`` after a round."""
        return b_min, b_max

    def surrogates(self) -> list[nn.Module]:
        return [self.layer.act.surrogate]


class NodeUnit:
    """A node of a retrained SpikeDHS cell: one LIF fed by two edges, each carrying its operation's
    temperature. ``b`` is the node's temperature (3 + its ``shift``); every edge temperature moves
    with it, and the bounds keep all of them inside ``[b_min, b_max]``. The edges' ``(conv, bn)``
    are copied (skips between nodes have none)."""

    def __init__(self, cell: nn.Module, index: int):
        self.node = cell.nodes[index]
        self.offsets = [b - self.node.b for _, b in cell.sources[index]]  # edge temperature - node temperature
        self.weighted = [op for op in cell.edges[index] if _has_conv_bn(op)]

    def temperature(self) -> float:
        return self.node.b + float(self.node.shift)

    def set_temperature(self, b: float) -> None:
        self.node.shift.fill_(b - self.node.b)

    def limits(self, b_min: float, b_max: float) -> tuple[float, float]:
        return b_min - min(self.offsets + [0.0]), b_max - max(self.offsets + [0.0])

    def surrogates(self) -> list[nn.Module]:
        return []  # the node's temperatures live in its own shift buffer


def _has_conv_bn(module: nn.Module) -> bool:
    return isinstance(getattr(module, "conv", None), (nn.Conv2d, nn.Conv3d, nn.Linear)) and isinstance(
        getattr(module, "bn", None), (nn.modules.batchnorm._BatchNorm, nn.Identity))


def unsearchable_reason(module: nn.Module) -> str | None:
    """Why ``module`` cannot be searched as a conv-bn-act layer, or None if it can (see the module docstring)."""
    conv, bn, act = (getattr(module, name, None) for name in ("conv", "bn", "act"))
    if not isinstance(conv, (nn.Conv2d, nn.Linear)):
        return "it has no 'conv' that is an nn.Conv2d or nn.Linear"
    if not isinstance(bn, (nn.modules.batchnorm._BatchNorm, nn.Identity)):
        return "it has no 'bn' that is a batch norm or nn.Identity"
    if not isinstance(act, SpikingNeuron):
        return "it has no 'act' that is a SpikingNeuron"
    if act.surrogate.learnable:
        return "its surrogate width is learnable (trained, not searched)"
    if type(act).surrogate_width is not SpikingNeuron.surrogate_width:
        return f"its {type(act).__name__} derives the surrogate width itself"
    if isinstance(module, nn.Sequential) and [name for name, _ in module.named_children()] != ["conv", "bn", "act"]:
        return "it runs other modules between or after conv, bn and act"
    return None


def _units(model: nn.Module) -> tuple[dict[str, "LayerUnit | NodeUnit"], dict[str, str]]:
    """Every searchable unit of ``model`` by module name in module order, and why the other modules are not."""

    nodes = {id(cell.nodes[i]): (cell, i) for cell in model.modules() if isinstance(cell, SpikeDHSCell)
             for i in range(len(cell.nodes))}
    units, reasons = {}, {}
    for name, module in model.named_modules():
        if id(module) in nodes:
            unit = NodeUnit(*nodes[id(module)])
            if unit.weighted:
                units[name] = unit
            else:
                reasons[name] = "it is a cell node whose edges are all skips (no weights to copy)"
            continue
        reason = unsearchable_reason(module)
        if reason is None:
            units[name] = LayerUnit(module)
        else:
            reasons[name] = reason
    return units, reasons


def find_searchable_layers(model: nn.Module, layers: str | Sequence[str] = "stem") -> dict[str, "LayerUnit | NodeUnit"]:
    """The layers DGS searches, by module name, in module order.

    Searchable: conv-bn-act layers (module docstring) and the nodes of retrained SpikeDHS cells.
    ``layers``: ``"stem"`` (the first searchable layer), ``"all"`` (every searchable layer) or a list
    of module names (each must be searchable).
    """
    units, reasons = _units(model)
    if isinstance(layers, str):
        if layers not in ("stem", "all"):
            raise ValueError(f"layers must be 'stem', 'all' or a list of module names, got {layers!r}")
        if not units:
            raise ValueError(
                f"{type(model).__name__} has no searchable layer: DGS needs modules with 'conv' (Conv2d/Linear), "
                "'bn' (batch norm or Identity) and 'act' (a SpikingNeuron with a fixed surrogate width), "
                "or SpikeDHS cells"
            )
        chosen = dict([next(iter(units.items()))]) if layers == "stem" else units
    else:
        names = list(layers)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"layers: expected distinct module names, got {names!r}")
        for name in names:
            if name not in units and name not in reasons:
                raise ValueError(f"layers: {type(model).__name__} has no module named {name!r}")
            if name in reasons:
                raise ValueError(f"layers: module {name!r} is not searchable: {reasons[name]}")
        chosen = {name: unit for name, unit in units.items() if name in names}
    _check_own_surrogates(model, chosen)
    return chosen


def _check_own_surrogates(model: nn.Module, units: dict[str, "LayerUnit | NodeUnit"]) -> None:
    """Setting a searched layer's ``b`` must not change any other neuron's."""
    users: dict[int, int] = {}
    for m in model.modules():
        if isinstance(m, SpikingNeuron):
            users[id(m.surrogate)] = users.get(id(m.surrogate), 0) + 1
    for name, unit in units.items():
        if any(users[id(surrogate)] > 1 for surrogate in unit.surrogates()):
            raise ValueError(f"layers: the neuron of {name!r} shares its surrogate module with another neuron")


# ----------------------------------------------------------------- mixer
class CandidateMixer(nn.Module):
    """Stands in for a layer's ``conv`` (its ``bn`` becomes Identity) during a DGS round.

    Holds ``count`` copies of ``(conv, bn)`` and mixing logits ``alpha[count]``.
    ``mode = k`` (an int) runs copy ``k``: ``bn_k(conv_k(x))``; ``mode = COMBINE``
    returns ``sum_k softmax(alpha)_k bn_k(conv_k(x))``. Shapes are the conv's:
    ``[N, C_in, H, W] -> [N, C_out, H', W']`` (or ``[N, F_in] -> [N, F_out]``),
    time folded into ``N``.
    """

    def __init__(self, conv: nn.Module, bn: nn.Module, count: int, alpha: nn.Parameter | None = None):
        super().__init__()
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        self.source = {"conv": copy.deepcopy(conv.state_dict()), "bn": copy.deepcopy(bn.state_dict())}
        self.convs = nn.ModuleList(copy.deepcopy(conv) for _ in range(count))
        self.bns = nn.ModuleList(copy.deepcopy(bn) for _ in range(count))
        for p in self.parameters():
            p.requires_grad_(True)
        weight = conv.weight
        # ``alpha`` may be shared: the edges of one cell node mix their copies with the node's weights
        self.alpha = alpha if alpha is not None else nn.Parameter(
            torch.full((count,), ALPHA_INIT, dtype=weight.dtype, device=weight.device))
        self.mode: int | str = COMBINE

    def restart(self) -> None:
        """Every copy back to the source layer's state (parameters and buffers); ``alpha`` to its initial value."""
        for conv, bn in zip(self.convs, self.bns):
            conv.load_state_dict(self.source["conv"])
            bn.load_state_dict(self.source["bn"])
        with torch.no_grad():
            self.alpha.fill_(ALPHA_INIT)

    def candidate_parameters(self, k: int) -> list[nn.Parameter]:
        """Parameters of copy ``k`` (its conv and bn)."""
        return [*self.convs[k].parameters(), *self.bns[k].parameters()]

    def weights(self) -> Tensor:
        """``softmax(alpha)``, detached: ``[count]``."""
        return torch.softmax(self.alpha.detach(), 0)

    def forward(self, x: Tensor) -> Tensor:
        if self.mode != COMBINE:
            return self.bns[self.mode](self.convs[self.mode](x))
        mix = torch.softmax(self.alpha, 0)
        return sum(w * bn(conv(x)) for w, conv, bn in zip(mix, self.convs, self.bns))

    def extra_repr(self) -> str:
        return f"count={len(self.convs)}, mode={self.mode!r}"


class UnitMixers:
    """The :class:`CandidateMixer` of every weighted module of one searched unit, sharing one ``alpha``."""

    def __init__(self, unit, count: int):
        self.mixers = []
        alpha = None
        for module in unit.weighted:
            mixer = CandidateMixer(module.conv, module.bn, count, alpha)
            alpha = mixer.alpha
            self.mixers.append(mixer)
        self.alpha = alpha

    def restart(self) -> None:
        for mixer in self.mixers:
            mixer.restart()

    def candidate_parameters(self, k: int) -> list[nn.Parameter]:
        return [p for mixer in self.mixers for p in mixer.candidate_parameters(k)]

    def weights(self) -> Tensor:
        """``softmax(alpha)``, detached: ``[count]``."""
        return torch.softmax(self.alpha.detach(), 0)

    def set_mode(self, mode: int | str) -> None:
        for mixer in self.mixers:
            mixer.mode = mode


@contextmanager
def _sandbox(model: nn.Module, units: dict, count: int):
    """Swap :class:`CandidateMixer`\\ s into every searched unit and freeze ``model`` for one round.

    Yields ``{name: UnitMixers}``. On exit the original ``conv``/``bn`` modules are back, the
    ``requires_grad`` flags are as they were and every parameter and buffer
    (the temperatures included) is bit-identical to its value on entry.
    """
    snapshot = {key: value.clone() for key, value in model.state_dict().items()}
    flags = [(p, p.requires_grad) for p in model.parameters()]
    originals = [(module, module.conv, module.bn) for unit in units.values() for module in unit.weighted]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        groups = {name: UnitMixers(unit, count) for name, unit in units.items()}
        for group, unit in zip(groups.values(), units.values()):
            for mixer, module in zip(group.mixers, unit.weighted):
                module.conv, module.bn = mixer, nn.Identity()
        yield groups
    finally:
        for module, conv, bn in originals:
            module.conv, module.bn = conv, bn
        for p, flag in flags:
            p.requires_grad_(flag)
        model.load_state_dict(snapshot)


def _step(optimizer: torch.optim.Optimizer, loss: Tensor) -> None:
    """One step of ``optimizer`` on the gradient of ``loss`` with respect to its own parameters only."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward(inputs=[p for group in optimizer.param_groups for p in group["params"]])
    optimizer.step()


# ----------------------------------------------------------------- search
class DGS:
    """Differentiable surrogate-gradient search of ``model``'s chosen layers (see the module docstring).

    Args:
        model: the model being trained (unwrapped: not the DDP wrapper).
        layers: ``"stem"``, ``"all"`` or a list of module names.
        deltas: temperature offsets of the candidates (``K = len(deltas)``).
        period: a round runs at epochs ``period, 2 period, ...`` (never at 0).
        minibatches: training batches per round (``M``; fewer if the data run out).
        alpha_lr: Adam learning rate of the mixing logits.
        b_min, b_max: bounds of ``b`` after each round.
        momentum, weight_decay: SGD settings of the candidate copies.
        candidate_lr: their SGD learning rate; None takes the one given to each
            round (the trainer gives the main optimiser's current rate).
        step_order: ``"candidates_first"`` (every copy steps, then the ``K``
            alpha steps) or ``"interleaved"`` (the official code's order: copy
            ``k``, then one alpha step, for each ``k``; biased to ``deltas[0]``).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: str | Sequence[str] = "stem",
        deltas: Sequence[float] = DEFAULT_DELTAS,
        period: int = 5,
        minibatches: int = 201,
        alpha_lr: float = 0.01,
        b_min: float = 1.0,
        b_max: float = 6.0,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        step_order: str = "candidates_first",
        candidate_lr: float | None = None,
    ):
        if step_order not in STEP_ORDERS:
            raise ValueError(f"step_order must be one of {', '.join(STEP_ORDERS)}, got {step_order!r}")
        deltas = tuple(float(d) for d in deltas)
        if not deltas or len(set(deltas)) != len(deltas) or not all(math.isfinite(d) for d in deltas):
            raise ValueError(f"deltas must be distinct finite numbers, got {deltas!r}")
        if period < 1:
            raise ValueError(f"period must be >= 1, got {period}")
        if minibatches < 1:
            raise ValueError(f"minibatches must be >= 1, got {minibatches}")
        if not alpha_lr > 0:
            raise ValueError(f"alpha_lr must be > 0, got {alpha_lr}")
        if candidate_lr is not None and not candidate_lr > 0:
            raise ValueError(f"candidate_lr must be > 0 (or None), got {candidate_lr}")
        if not b_min < b_max:
            raise ValueError(f"b_min must be < b_max, got [{b_min}, {b_max}]")
        if not b_min + min(deltas) > 0:
            raise ValueError(f"b_min + min(deltas) must be > 0 (candidate temperatures), got {b_min} + {min(deltas)}")
        self.model = model
        self.layers = find_searchable_layers(model, layers)
        for name, b in self.temperatures().items():
            if not b + min(deltas) > 0:
                raise ValueError(f"layers: {name!r} has b = {b}, so candidate b + {min(deltas)} would not be positive")
        self.deltas = deltas
        self.period = int(period)
        self.minibatches = int(minibatches)
        self.alpha_lr = float(alpha_lr)
        self.b_min, self.b_max = float(b_min), float(b_max)
        self.momentum, self.weight_decay = float(momentum), float(weight_decay)
        self.step_order = step_order
        self.candidate_lr = candidate_lr

    @classmethod
    def from_config(cls, model: nn.Module, config, momentum: float = 0.9, weight_decay: float = 0.0) -> "DGS":
        """From a :class:`spikeforge.train.config.DGSConfig` (``enabled`` is the caller's business)."""
        return cls(model, layers=config.layers, deltas=config.deltas, period=config.period,
                   minibatches=config.minibatches, alpha_lr=config.alpha_lr, b_min=config.b_min,
                   b_max=config.b_max, momentum=momentum, weight_decay=weight_decay, step_order=config.step_order,
                   candidate_lr=config.candidate_lr)

    def due(self, epoch: int) -> bool:
        """Whether a round runs before training epoch ``epoch`` (0-based)."""
        return epoch > 0 and epoch % self.period == 0

    def temperatures(self) -> dict[str, float]:
        """Current ``b`` per searched layer, rounded to 1e-6 (rounds start from these values, so
        ``b`` stays on the grid of ``deltas`` instead of collecting float32 rounding errors)."""
        return {name: round(unit.temperature(), 6) for name, unit in self.layers.items()}

    def run_round(self, batches: Iterable[tuple[Tensor, Tensor]], loss_fn: Callable[[Tensor, Tensor], Tensor],
                  lr: float) -> dict[str, list[float]]:
        """One DGS round on up to ``minibatches`` of ``batches``; moves every searched layer's ``b``.

        ``batches`` yields ``(inputs, targets)`` already on the model's device;
        ``loss_fn(model(inputs), targets)`` is the training loss; ``lr`` is the
        candidates' SGD learning rate unless ``candidate_lr`` was set. The model runs in its current mode
        (normally ``train()``). Returns the mean mixing weights per layer
        (``[K]`` each, order of ``deltas``); nothing else of the model changes.
        """
        base = self.temperatures()
        with _sandbox(self.model, self.layers, len(self.deltas)) as mixers:
            scores = self._scores(mixers, base, batches, loss_fn,
                                  lr if self.candidate_lr is None else self.candidate_lr)
        for name, unit in self.layers.items():
            delta = self.deltas[int(scores[name].argmax())]
            low, high = unit.limits(self.b_min, self.b_max)
            unit.set_temperature(min(max(base[name] + delta, low), high))
        return {name: (s / s.sum()).tolist() for name, s in scores.items()}

    def _scores(self, mixers: dict[str, UnitMixers], base: dict[str, float], batches, loss_fn,
                lr: float) -> dict[str, Tensor]:
        """Summed ``softmax(alpha)`` per layer over the round, ``[K]`` each (summed over ranks under DDP)."""
        copies = [
            torch.optim.SGD([p for m in mixers.values() for p in m.candidate_parameters(k)], lr=lr,
                            momentum=self.momentum, weight_decay=self.weight_decay)
            for k in range(len(self.deltas))
        ]
        mixing = torch.optim.Adam([m.alpha for m in mixers.values()], lr=self.alpha_lr)
        scores = {name: torch.zeros(len(self.deltas), dtype=torch.float64) for name in mixers}
        used = 0
        for inputs, targets in islice(batches, self.minibatches):
            for mixer in mixers.values():
                mixer.restart()
            for mode in self._plan():
                if mode == COMBINE:
                    _step(mixing, self._loss(mixers, COMBINE, base, inputs, targets, loss_fn))
                    for name, mixer in mixers.items():
                        scores[name] += mixer.weights().cpu().double()
                else:
                    _step(copies[mode], self._loss(mixers, mode, base, inputs, targets, loss_fn))
            used += 1
        if not used:
            raise ValueError("DGS round: batches yielded no minibatch")
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            stacked = torch.stack(list(scores.values())).to(next(iter(mixers.values())).alpha.device)
            torch.distributed.all_reduce(stacked)
            scores = dict(zip(scores, stacked.cpu()))
        return scores

    def _plan(self) -> list[int | str]:
        """One minibatch's steps in order: a copy index (one SGD step on that copy) or COMBINE
        (one Adam step on alpha)."""
        count = len(self.deltas)
        if self.step_order == "interleaved":
            return [mode for k in range(count) for mode in (k, COMBINE)]
        return [*range(count), *[COMBINE] * count]

    def _loss(self, mixers: dict[str, UnitMixers], mode: int | str, base: dict[str, float],
              inputs: Tensor, targets: Tensor, loss_fn) -> Tensor:
        """Training loss with every searched layer in ``mode`` (copy ``k`` at ``b + deltas[k]``,
        or combine at ``b``)."""
        for name, unit in self.layers.items():
            mixers[name].set_mode(mode)
            unit.set_temperature(base[name] + (0.0 if mode == COMBINE else self.deltas[mode]))
        loss = loss_fn(self.model(inputs), targets)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"DGS round: the loss is {loss.item()} in mode {mode!r}")
        return loss


class DGSCallback(Callback):
    """DGS in a training run (the recipe's ``dgs`` section): before every epoch, the epoch record's
    ``dgs_b`` per searched layer (the temperatures the epoch trains with), after a round on the epoch's
    training batches when one is due (then also ``dgs_weights``, the round's mean mixing weights per
    layer, in the order of ``dgs.deltas``)."""

    def __init__(self, dgs: DGS):
        self.dgs = dgs

    @classmethod
    def for_trainer(cls, trainer) -> "DGSCallback":
        """The callback of ``trainer``'s recipe (its ``dgs`` section; candidates step with its SGD settings)."""
        c = trainer.config
        return cls(DGS.from_config(trainer.model, c.dgs, c.optim.momentum, c.optim.weight_decay))

    def on_epoch_start(self, loop: FitLoop, epoch: int, stage) -> dict:
        if not self.dgs.due(epoch):
            return {"dgs_b": self.dgs.temperatures()}
        loop.model.train()
        batches = (loop.task.split(batch, loop.device, loop.format_for)
                   for batch in loop.loader(loop.train_set, True, epoch))
        lr = next(iter(loop.optimizers().values())).param_groups[0]["lr"]
        weights = self.dgs.run_round(batches, loop.task.loss, lr=lr)
        return {"dgs_b": self.dgs.temperatures(), "dgs_weights": weights}


register_section_callback("dgs", DGSCallback.for_trainer)
