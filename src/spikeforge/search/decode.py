"""Decoding searched architecture weights into a genotype: the cell (:func:`decode_cell`) and the
network path through the trellis (:func:`viterbi_path` over :func:`transition_log_weights`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..models.spikedhs.genotype import TRELLIS_MOVES
from ..models.spikedhs.operations import PRIMITIVES, num_edges

__all__ = ["decode_cell", "transition_log_weights", "viterbi_path"]


def decode_cell(alpha: Tensor, nodes: int = 3, primitives: tuple[str, ...] = PRIMITIVES) -> tuple[tuple[int, str], ...]:
    """Cell of a genotype from the edge weights ``alpha [edges, ops]`` (logits), as the published decoder.

    After a softmax over operations, each node keeps the two incoming edges whose best
    non-skip operation weighs most (``skip_connect`` does not rank edges), each with its
    strongest operation over all of them (so a kept edge may be ``skip_connect``).
    """
    if alpha.shape != (num_edges(nodes), len(primitives)):
        raise ValueError(f"alpha must be [{num_edges(nodes)}, {len(primitives)}], got {list(alpha.shape)}")
    weights = torch.softmax(alpha.detach().float(), dim=-1)
    candidates = [i for i, op in enumerate(primitives) if op != "skip_connect"]
    rank_weight = weights[:, candidates].max(dim=-1).values
    best_op = weights.argmax(dim=-1)
    cell, start = [], 0
    for node in range(nodes):
        edges = range(start, start + 2 + node)
        kept = sorted(edges, key=lambda e: (-float(rank_weight[e]), e))[:2]
        cell += [(e, primitives[int(best_op[e])]) for e in sorted(kept)]
        start += 2 + node
    return tuple(cell)


def transition_log_weights(beta: Tensor, trellis: str = "down") -> Tensor:
    """Log-weights ``[layers, levels, moves]`` of the trellis weights ``beta`` (logits, same shape).

    ``beta[l, k, m]`` weighs leaving level ``k`` at layer ``l`` by the move
    ``TRELLIS_MOVES[trellis][m]`` (to level ``k + move``). The softmax runs over the
    ``a`` moves that stay inside the levels (the others get ``-inf``) and is scaled by
    ``a / moves``, as the published supernet and decoder do: the lowest level of the
    ``"down"`` trellis keeps its one move with weight 1/2, the boundary levels of the
    ``"updown"`` trellis share 2/3. So uniform ``beta`` gives every move of every level
    the same weight, and no level is favoured by having fewer ways out.
    """
    moves = TRELLIS_MOVES.get(trellis)
    if moves is None:
        raise ValueError(f"trellis must be one of {', '.join(TRELLIS_MOVES)}, got {trellis!r}")
    if beta.dim() != 3 or beta.shape[-1] != len(moves):
        raise ValueError(f"beta of the {trellis!r} trellis must be [layers, levels, {len(moves)}], "
                         f"got {list(beta.shape)}")
    levels = beta.shape[1]
    target = torch.arange(levels, device=beta.device).unsqueeze(1) + torch.tensor(moves, device=beta.device)
    allowed = (target >= 0) & (target < levels)  # [levels, moves]
    share = torch.log(allowed.sum(-1, keepdim=True).to(beta.dtype) / len(moves))  # [levels, 1]
    return torch.log_softmax(beta.masked_fill(~allowed, -math.inf), dim=-1) + share


def viterbi_path(beta: Tensor, trellis: str = "down") -> tuple[int, ...]:
    """The most probable network path through the trellis weights ``beta [layers, levels, moves]`` (logits).

    The path starts from the stem at level 0, moves by ``TRELLIS_MOVES[trellis]``
    at every layer with the probabilities of :func:`transition_log_weights`, and
    maximises the product of the chosen ones; it may end at any level. Ties go to
    the smaller move, then to the higher-resolution level.
    """
    log_w = transition_log_weights(beta.detach().cpu().double(), trellis).tolist()
    moves = TRELLIS_MOVES[trellis]
    layers, levels = len(log_w), len(log_w[0])
    score = [0.0] + [-math.inf] * (levels - 1)  # before layer 0: at the stem's level 0
    back: list[list[int]] = []
    for layer in range(layers):
        new, arg = [-math.inf] * levels, [0] * levels
        for k in range(levels):
            options = [(score[k - move] + log_w[layer][k - move][m], -abs(move), k - move)
                       for m, move in enumerate(moves) if 0 <= k - move < levels]
            best = max(options, key=lambda o: o[:2])
            new[k], arg[k] = best[0], best[2]
        score = new
        back.append(arg)
    level = max(range(levels), key=lambda k: (score[k], -k))
    path = [level]
    for arg in reversed(back[1:]):
        level = arg[level]
        path.append(level)
    return tuple(reversed(path))
