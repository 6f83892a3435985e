"""Operation counts per layer: MACs of the ANN-equivalent, MACs and synaptic operations of the SNN.

All numbers are per sample: one forward of the ANN; all ``T`` steps of the SNN.

- **Synaptic layers** (``Conv1d/2d/3d``, ``Linear``). ANN: dense MACs,
  ``outputs x C_in/groups x kernel taps`` for a convolution (padding taps
  included, as ``torch.utils.flop_counter`` and other MAC counters do) and
  ``in x out`` for a linear layer. SNN: one accumulate (SOP) per nonzero input
  element per output it reaches, its fan-out (:mod:`~spikeforge.analysis.fanout`:
  ``C_out/groups`` times the window positions reading it, exact at padded
  borders). Nonzero rather than "equal to 1": threshold-scaled spikes
  (converted networks) and average-pooled spikes count once per element.
- **Analog input.** A synaptic layer that runs before any spiking neuron in
  the forward call sees the analog input and does dense MACs at every step
  (direct encoding feeds the image at each of the ``T`` steps): ``snn_macs``.
  When the input is static, these layers could run once instead of ``T``
  times; :meth:`spikeforge.analysis.EnergyReport.totals` gives that number too.
  With ``input_is_spikes=True`` (event frames, Poisson coding; automatic for
  a Poisson-encoding ``SpikingNetwork``) they count SOPs instead.
- **Pooling** (average, max, adaptive) and **element-wise adds** of two
  same-shape tensors in a block's forward (residual and SEW connections, found
  by watching ``torch.add`` / ``+`` outside the neurons) are accumulates in
  both networks: the ANN does one per (input element, output reading it), the
  sum of the window sizes for a pool and one per operand element for an add;
  the SNN the same for nonzero input elements only.
- **Free**: batch norm (folded into the preceding layer), activations and the
  neurons' own membrane updates, reshapes, dropout. Other layers with a weight
  matrix (e.g. ``ConvTranspose2d``) are not counted and are listed in
  :attr:`OperationCounts.uncounted`.

A network without neurons (an ANN) gets SNN MACs equal to its ANN MACs; its
pools and adds skip zero inputs (after a ReLU), as the SNN's do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ..core.neuron import SpikingNeuron
from ..core.time import SpikingNetwork
from .fanout import ADAPTIVE_POOL_TYPES, CONV_TYPES, POOL_TYPES, pool_dims, spatial_fanout

__all__ = ["LayerOps", "OperationCounts", "OperationCounter"]

_ADD_NAMES = {"add", "add_", "__add__", "__radd__", "__iadd__"}


@dataclass(frozen=True)
class LayerOps:
    """Operations of one layer per sample.

    Attributes:
        name: the layer's path in the model; an add is named after the module whose
            forward does it, ``<module>.add`` (``.add2``, ... for further adds).
        kind: ``"conv"``, ``"linear"``, ``"pool"`` or ``"add"``.
        analog_input: the layer saw the analog network input (counted as MACs in the SNN).
        input_rate: fraction of nonzero input elements over all steps (None for analog input).
        ann_macs: multiply-accumulates of the ANN-equivalent (one forward).
        ann_acs: accumulates (adds, comparisons) of the ANN-equivalent (pooling, adds).
        snn_macs: multiply-accumulates of the SNN over all steps (analog input only).
        snn_sops: accumulates of the SNN over all steps: synaptic operations of a
            conv / linear layer, event-driven adds of a pool / add.
    """

    name: str
    kind: str
    analog_input: bool
    input_rate: float | None
    ann_macs: float
    ann_acs: float
    snn_macs: float
    snn_sops: float


@dataclass(frozen=True)
class OperationCounts:
    """Per-layer operation counts (in order of first execution) over ``samples`` inputs of ``timesteps`` steps.

    Attributes:
        static_input: every input was a static batch fed at each step (direct
            encoding), so the layers before the first neuron could run once
            instead of ``timesteps`` times.
        uncounted: layers that own a weight matrix but whose operations are not counted.
    """

    layers: list[LayerOps]
    samples: int
    timesteps: int
    static_input: bool
    uncounted: list[str] = field(default_factory=list)

    def total(self, attribute: str) -> float:
        """Sum of one :class:`LayerOps` count (e.g. ``"snn_sops"``) over the layers."""
        return sum(getattr(layer, attribute) for layer in self.layers)


@dataclass
class _Tally:
    """Running sums of one layer over all counted calls (every row: batch and steps)."""

    kind: str
    dense: int = 0  # ANN operations over all rows
    analog_dense: int = 0  # dense MACs of calls with analog input
    events: Tensor | int = 0  # event-driven operations
    nonzero: Tensor | int = 0  # nonzero input elements of event-driven calls
    elements: int = 0  # input elements of event-driven calls


def _nonzero_per_position(x: Tensor, spatial_dims: int) -> Tensor:
    """Nonzero count per spatial position, summed over batch and channels: int64 ``x.shape[-spatial_dims:]``."""
    return (x != 0).sum(dim=tuple(range(x.dim() - spatial_dims)))


class _AddInterceptor(TorchFunctionMode):
    """Sees every torch function call during counting and reports tensor + tensor adds."""

    def __init__(self, counter: "OperationCounter"):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", None) in _ADD_NAMES:
            self.counter._count_add(args)  # before the call: an in-place add overwrites its first operand
        return func(*args, **(kwargs or {}))


class OperationCounter:
    """Context manager counting the operations of every forward call of ``model`` (see the module docstring).

    ::

        with torch.no_grad(), OperationCounter(snn) as counter:
            for images in batches:
                snn(images)
        counts = counter.result()

    The model must return a tensor (or a tuple whose first item is one):
    ``[T, B, ...]`` when it contains spiking neurons (as
    :class:`~spikeforge.SpikingNetwork` does), ``[B, ...]`` otherwise.
    Count a simulation as one call of ``T`` steps per batch, not in chunks.

    Args:
        model: any module; hooks are attached to all its submodules while active.
        input_is_spikes: the network input is already spikes, so the first layers
            count SOPs, not MACs. ``None``: true for a Poisson-encoding ``SpikingNetwork``.
    """

    def __init__(self, model: nn.Module, input_is_spikes: bool | None = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if input_is_spikes is None:
            input_is_spikes = isinstance(model, SpikingNetwork) and model.encoding == "poisson"
        self.model = model
        self.input_is_spikes = bool(input_is_spikes)
        self._tallies: dict[str, _Tally] = {}
        self._uncounted: dict[str, None] = {}
        self._samples = 0
        self._sample_steps = 0
        self._timesteps: set[int] = set()
        self._static_input = True
        self._handles: list = []
        self._mode: _AddInterceptor | None = None
        self._reset_call()
        self._active = False

    # ------------------------------------------------------------ context
    def __enter__(self) -> "OperationCounter":
        for name, module in self.model.named_modules():
            self._handles.append(module.register_forward_pre_hook(self._pre_hook(name)))
            self._handles.append(module.register_forward_hook(self._post_hook(name)))
        self._mode = _AddInterceptor(self)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)
        self._mode = None
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._active = False

    # ------------------------------------------------------------ one call
    def _reset_call(self) -> None:
        self._stack: list[str] = []  # paths of the modules currently running, innermost last
        self._adds_in_call: dict[str, int] = {}
        self._inside_neuron = 0
        self._spiking = self.input_is_spikes  # a neuron has fired in this call (or the input is spikes)
        self._neuron_ran = False
        self._busy = False  # our own hook code is running: its arithmetic is not the model's

    def _begin_call(self, inputs: tuple) -> None:
        self._reset_call()
        self._active = True
        model = self.model
        self._call_static = (isinstance(model, SpikingNetwork) and model.encoding == "direct"
                             and bool(inputs) and inputs[0].dim() == model.static_ndim)

    def _end_call(self, output) -> None:
        self._active = False
        if isinstance(output, (tuple, list)) and output:
            output = output[0]  # e.g. (logits, auxiliary logits): the first output tells T and B
        if not isinstance(output, Tensor):
            raise TypeError(f"operation counting needs a model returning a tensor, got {type(output).__name__}")
        if self._neuron_ran:
            if output.dim() < 2:
                raise ValueError(f"a spiking model must return a time-first tensor [T, B, ...], got shape "
                                 f"{tuple(output.shape)}")
            steps, batch = output.shape[0], output.shape[1]
        else:
            steps, batch = 1, output.shape[0]
        self._samples += batch
        self._sample_steps += batch * steps
        self._timesteps.add(steps)
        self._static_input = self._static_input and (self._call_static or steps == 1)

    def _pre_hook(self, name: str):
        def hook(module: nn.Module, inputs) -> None:
            if module is self.model:
                self._begin_call(inputs)
            if not self._active:
                return
            self._stack.append(name)
            self._adds_in_call[name] = 0
            if isinstance(module, SpikingNeuron):
                self._inside_neuron += 1

        return hook

    def _post_hook(self, name: str):
        def hook(module: nn.Module, inputs, output) -> None:
            if not self._active:
                return
            self._busy = True
            try:
                self._stack.pop()
                if isinstance(module, SpikingNeuron):
                    self._inside_neuron -= 1
                    self._spiking = self._neuron_ran = True
                elif isinstance(module, CONV_TYPES + (nn.Linear,)):
                    self._count_synaptic(name, module, inputs[0], output)
                elif isinstance(module, POOL_TYPES + ADAPTIVE_POOL_TYPES):
                    self._count_pool(name, module, inputs[0], output)
                elif any(p.dim() >= 2 for p in module.parameters(recurse=False)):
                    self._uncounted[name] = None
                if module is self.model:
                    self._end_call(output)
            finally:
                self._busy = False

        return hook

    # ------------------------------------------------------------ counting
    def _tally(self, name: str, kind: str) -> _Tally:
        if name not in self._tallies:
            self._tallies[name] = _Tally(kind)
        return self._tallies[name]

    def _add_events(self, tally: _Tally, events, nonzero, elements: int) -> None:
        tally.events = tally.events + events
        tally.nonzero = tally.nonzero + nonzero
        tally.elements += elements

    def _count_synaptic(self, name: str, module: nn.Module, x: Tensor, out: Tensor) -> None:
        if isinstance(module, nn.Linear):
            tally = self._tally(name, "linear")
            dense = x.numel() * module.out_features
        else:
            tally = self._tally(name, "conv")
            dense = out.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)
        tally.dense += dense
        if not self._spiking:
            tally.analog_dense += dense
        elif isinstance(module, nn.Linear):
            nonzero = (x != 0).sum()
            self._add_events(tally, nonzero * module.out_features, nonzero, x.numel())
        else:
            dims = len(module.kernel_size)
            per_position = _nonzero_per_position(x, dims)
            fanout = spatial_fanout(module, name, tuple(x.shape[-dims:]), tuple(out.shape[-dims:])).to(x.device)
            events = (per_position * fanout).sum() * (module.out_channels // module.groups)
            self._add_events(tally, events, per_position.sum(), x.numel())

    def _count_pool(self, name: str, module: nn.Module, x: Tensor, out: Tensor) -> None:
        tally = self._tally(name, "pool")
        dims = pool_dims(module)
        fanout = spatial_fanout(module, name, tuple(x.shape[-dims:]), tuple(out.shape[-dims:]))
        tally.dense += int(fanout.sum()) * (x.numel() // fanout.numel())
        fanout = fanout.to(x.device)
        per_position = _nonzero_per_position(x, dims)
        self._add_events(tally, (per_position * fanout).sum(), per_position.sum(), x.numel())

    def _count_add(self, args: tuple) -> None:
        """Called by the interceptor for every add; counts those of two same-shape tensors in a block's forward."""
        if not self._active or self._busy or self._inside_neuron or not self._stack or len(args) < 2:
            return
        a, b = args[0], args[1]
        if not (isinstance(a, Tensor) and isinstance(b, Tensor)) or a.shape != b.shape:
            return
        owner = self._stack[-1]
        self._adds_in_call[owner] += 1
        index = self._adds_in_call[owner]
        name = ("add" if not owner else f"{owner}.add") + (str(index) if index > 1 else "")
        tally = self._tally(name, "add")
        tally.dense += a.numel() + b.numel()
        nonzero = (a != 0).sum() + (b != 0).sum()
        self._add_events(tally, nonzero, nonzero, a.numel() + b.numel())

    # ------------------------------------------------------------ result
    def result(self) -> OperationCounts:
        """Per-sample counts over every call so far."""
        if not self._samples:
            raise ValueError("no forward call of the model was counted: run the model inside the counter")
        if len(self._timesteps) > 1:
            raise ValueError(f"the counted calls used different numbers of time steps {sorted(self._timesteps)}: "
                             "count one T at a time")
        layers = []
        for name, t in self._tallies.items():
            ann = t.dense / self._sample_steps
            synaptic = t.kind in ("conv", "linear")
            layers.append(LayerOps(
                name=name,
                kind=t.kind,
                analog_input=t.analog_dense > 0,
                input_rate=float(t.nonzero) / t.elements if t.elements else None,
                ann_macs=ann if synaptic else 0.0,
                ann_acs=0.0 if synaptic else ann,
                snn_macs=t.analog_dense / self._samples,
                snn_sops=float(t.events) / self._samples,
            ))
        (steps,) = self._timesteps
        return OperationCounts(layers, self._samples, steps, self._static_input, list(self._uncounted))
