"""Cases shared by the kernel tests of every backend: random inputs and options, one run under a
random upstream gradient, the comparison with the reference, the published surrogate formulas at
their ties and window edges, and the documented rule for non-finite membranes (a loop on floats)."""

import math

import torch
from hypothesis import strategies as st

from spikeforge import surrogate as sg

SHAPES = [sg.Rectangle, sg.Triangle, sg.Sigmoid, sg.ATan, sg.Erf, sg.DSpike, sg.SuperSpike]
PARAMS = ("decay", "input_scale", "v_th", "width", "v_init")

#: Hypothesis strategies for the arguments of :func:`make_inputs` and the recurrence's options.
CASES = dict(
    seed=st.integers(0, 2**31 - 1),
    steps=st.integers(1, 9),
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    surrogate=st.sampled_from(SHAPES),
    hard=st.booleans(),
    v_reset=st.sampled_from([0.0, -0.2]),
    detach_reset=st.booleans(),
    strict=st.booleans(),
    timing=st.sampled_from(["now", "next_step"]),
    learnable=st.sets(st.sampled_from(PARAMS)),
    per_channel=st.booleans(),
)


def make_inputs(seed, steps, shape, dtype, learnable, per_channel):
    """Input and parameters; learnable ones are tensors with grad, others floats (width: tensor)."""
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(steps, *shape, generator=gen, dtype=torch.float64) * 1.2 + 0.6).to(dtype)
    base = {"decay": 0.6, "input_scale": 0.9, "v_th": 0.8, "width": 1.1, "v_init": 0.1}
    values = {}
    for name, value in base.items():
        if name in learnable or name == "width":
            if per_channel and name in ("decay", "v_th") and len(shape) >= 2:
                jitter = 1 + 0.1 * torch.rand(shape[0], *[1] * (len(shape) - 1), generator=gen, dtype=torch.float64)
                t = (value * jitter).to(dtype)
            elif name == "v_init":
                t = (value + 0.2 * torch.rand(shape, generator=gen, dtype=torch.float64)).to(dtype)
            else:
                t = torch.tensor(value, dtype=dtype)
            values[name] = t.requires_grad_(name in learnable)
        else:
            values[name] = value
    return x, values


def make_unit_inputs(seed, steps, shape, dtype, layout, learnable=PARAMS):
    """Input and every parameter as a tensor varying over one step ``shape``: per channel (``[C, 1, ...]`` on
    the second dim of the step, as ``[B, C, H, W]``, the first when the step has one dim) or per neuron
    (``shape`` itself), around :func:`make_inputs`' values (width and decay stay positive); ``learnable``
    ones require grad."""
    x, _ = make_inputs(seed, steps, shape, dtype, set(), False)
    gen = torch.Generator().manual_seed(seed + 2)
    dim = min(1, len(shape) - 1)
    unit = shape if layout == "neuron" else (shape[dim], *[1] * (len(shape) - dim - 1))
    base = {"decay": 0.6, "input_scale": 0.9, "v_th": 0.8, "width": 1.1, "v_init": 0.1}
    values = {}
    for name, value in base.items():
        jitter = torch.rand(unit, generator=gen, dtype=torch.float64)
        t = value + 0.2 * jitter if name == "v_init" else value * (1 + 0.2 * jitter)
        values[name] = t.to(dtype).requires_grad_(name in learnable)
    return x, values


def convert(values, fn):
    """Apply ``fn`` to the tensor values, keeping their requires_grad."""
    return {k: (fn(v.detach()).requires_grad_(v.requires_grad) if torch.is_tensor(v) else v) for k, v in values.items()}


def run(kernel, x, values, spec, seed):
    """Spikes, final membrane and all gradients under a random upstream gradient."""
    xx = x.clone().requires_grad_()
    vals = convert(values, torch.clone)
    s, u = kernel(xx, spec, *(vals[k] for k in PARAMS))
    gen = torch.Generator().manual_seed(seed + 1)
    gs = torch.randn(s.shape, generator=gen, dtype=torch.float64).to(s.device, s.dtype)
    gu = torch.randn(u.shape, generator=gen, dtype=torch.float64).to(u.device, u.dtype)
    ((s * gs).sum() + (u * gu).sum()).backward()
    grads = {"x": xx.grad}
    grads.update({k: v.grad for k, v in vals.items() if torch.is_tensor(v) and v.requires_grad})
    return s.detach(), u.detach(), grads


def assert_matches_reference(reference, result, dtype, label: str) -> None:
    """``result`` of :func:`run` against the reference's: the same spikes, the final membrane and every
    gradient within 1e-5 (float32) or 1e-10 (float64), relative to the gradient's largest entry."""
    (s_ref, u_ref, g_ref), (s, u, g) = reference, result
    assert torch.equal(s_ref, s.cpu()), f"{label}: spikes differ"
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(u.cpu(), u_ref, **tol)
    assert g_ref.keys() == g.keys()
    for name in g_ref:
        scale = max(1.0, g_ref[name].abs().max().item())
        torch.testing.assert_close(g[name].cpu(), g_ref[name], rtol=tol["rtol"], atol=tol["atol"] * scale,
                                   msg=f"{label}: {name}")


def _sigmoid(v):
    return 1 / (1 + math.exp(-v))


# The published formulas dF/dx, written out independently of spikeforge.surrogate; EDGES: their kinks.
ANALYTIC = {
    sg.Rectangle: lambda x, w: float(abs(x) < w / 2) / w,
    sg.Triangle: lambda x, w: max(0.0, w - abs(x)) / w**2,
    sg.Sigmoid: lambda x, w: w * _sigmoid(w * x) * (1 - _sigmoid(w * x)),
    sg.ATan: lambda x, w: (w / 2) / (1 + (math.pi / 2 * w * x) ** 2),
    sg.Erf: lambda x, w: w / math.sqrt(math.pi) * math.exp(-((w * x) ** 2)),
    sg.DSpike: lambda x, w: float(abs(x) < 0.5) * w * (1 - math.tanh(w * x) ** 2) / (2 * math.tanh(w / 2)),
    sg.SuperSpike: lambda x, w: 1 / (w * abs(x) + 1) ** 2,
}
EDGES = {sg.Rectangle: lambda w: [w / 2], sg.Triangle: lambda w: [w], sg.DSpike: lambda w: [0.5]}


def _tie_points(edges: list[float], dtype) -> torch.Tensor:
    """0 and every edge, each exactly and one ulp either side, on both sides of 0."""
    exact = torch.tensor([0.0, *edges], dtype=dtype)
    near = [torch.nextafter(exact, torch.full_like(exact, bound)) for bound in (-math.inf, math.inf)]
    points = torch.cat([exact, *near])
    return torch.cat([points, -points]).unique()


def formula_case(surrogate, dtype, v_th):
    """One step at the surrogate's ties and window edges: ``(x[1, N], w, expected dL/dx, tolerance)``
    for the loss ``sum of spikes`` (``expected`` at the kernels' own ``z = x - v_th``)."""
    w = torch.tensor(0.8, dtype=dtype)
    z = _tie_points(EDGES.get(surrogate, lambda w: [1.0])(w.item()), dtype)
    x = (z + v_th).reshape(1, -1)
    z_actual = (x[0] - v_th).tolist()  # the kernels' z (= z itself wherever v_th = 0)
    assert 0.0 in z_actual
    expected = torch.tensor([ANALYTIC[surrogate](v, w.item()) for v in z_actual], dtype=dtype)
    return x, w, expected, 1e-6 if dtype == torch.float32 else 1e-12


INF, NAN = math.inf, math.nan
# One neuron per column, 8 steps; finite values are dyadic so every backend's arithmetic is exact.
COLUMNS = [
    [0.5, 0.75, INF, 0.25, 0.5, INF, 0.0, 0.75],
    [INF, INF, INF, INF, INF, INF, INF, INF],
    [0.5, -INF, 0.75, 2.0, 0.5, 0.25, 1.5, 0.0],
    [0.25, 0.5, 0.75, NAN, 2.0, 0.5, 1.0, 0.25],
    [INF, -INF, 0.5, 1.25, 0.5, 0.0, 1.0, 0.5],
    [-INF, INF, 0.5, 1.25, 0.5, 0.0, 1.0, 0.5],
    [NAN, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
    [0.5, 0.75, 1.0, 0.25, 1.5, 0.5, 0.0, 1.25],
]
RESETS = {"hard": (True, 0.0), "hard-to-minus-quarter": (True, -0.25), "soft": (False, 0.0)}


def simulate(column, decay, v_th, v_reset, hard, strict, delayed, v_init=0.0):
    """The documented recurrence for one neuron on Python floats; returns (spikes, final state)."""
    def fires(v):
        return v > v_th if strict else v >= v_th

    def spike(v):
        return math.nan if math.isnan(v) else float(fires(v))

    state, spikes = v_init, []
    for x in column:
        if not delayed:
            h = decay * state + x
            state = (v_reset if fires(h) else h) if hard else h - v_th * spike(h)
        else:
            if hard:
                h = v_reset + x if fires(state) else decay * state + x
            else:
                h = decay * state + x - v_th * float(fires(state))
            state = h
        spikes.append(spike(h))
    return spikes, state


def expected_rule(reset: str, timing: str, strict: bool, decay: float):
    """Spikes ``[8, 8]`` and final states ``[8]`` (float64) of :data:`COLUMNS` under the documented rule,
    with ``v_th = 1``."""
    hard, v_reset = RESETS[reset]
    expected = [simulate(c, decay, 1.0, v_reset, hard, strict, timing == "next_step") for c in COLUMNS]
    spikes = torch.tensor([s for s, _ in expected], dtype=torch.float64).T
    return spikes, torch.tensor([u for _, u in expected], dtype=torch.float64)
