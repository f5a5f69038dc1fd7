"""What one batch's per-layer statistics say, in words (task=init_check).

Each row is one kernel layer at its depth (1 = the first): `std` of its activations, `dead_fraction`
(units that are 0 on every example), `grad_norm` of its kernel and `update_ratio` (one step's
change of the kernel over the kernel's norm). The thresholds are orders of magnitude, not tuned
values: a signal is "vanishing" or "exploding" once it changed 1000x across the depth (float32
still represents it, but the layers beyond learn on noise or saturate), gradients at 100x (see
GRADIENT_CHANGE), and one step should move a
kernel by about 1e-3 of its norm (Karpathy's rule of thumb, CS231n "babysitting the learning
process"), with 10x either way a plain warning.
"""

from __future__ import annotations

import math

SIGNAL_CHANGE = 1e3  # activations this many times smaller (larger) than earlier: vanishing (exploding)
WARN_CHANGE = 10.0
# Gradients are judged at 100x: one rate serves every layer, and a 100x spread of gradient norms
# across the depth means the rate that moves the first layer by 1e-3 moves the last by 1e-5 (or 1e-1).
GRADIENT_CHANGE = 1e2
DEAD = 0.5  # at least this fraction of a layer's units dead
UPDATE_HIGH, UPDATE_LOW = 1e-1, 1e-5  # one step's change of a kernel relative to its norm


def _x(ratio: float) -> str:
    return f"{ratio:.3g}x" if ratio < 1e5 else f"{ratio:.1e}x"


def row_verdict(row: dict, first_std: float) -> str:
    """The words for one layer, given the first layer's activation std."""
    said = []
    std = row["std"]
    if std == 0:
        said.append("no signal: every activation is 0")
    elif first_std > 0 and std * SIGNAL_CHANGE <= first_std:
        said.append(f"vanishing: activations {_x(first_std / std)} smaller than at layer 1")
    elif first_std > 0 and std >= first_std * SIGNAL_CHANGE:
        said.append(f"exploding: activations {_x(std / first_std)} larger than at layer 1")
    if std > 0 and row.get("dead_fraction") is not None and row["dead_fraction"] >= DEAD:
        said.append(f"{row['dead_fraction']:.0%} of units dead (0 on every example)")
    if row.get("trainable") is False:
        said.append("frozen (model.trainable): not trained")
        return "; ".join(said)
    if row.get("grad_norm") == 0:
        said.append("no gradient reaches the kernel")
    ratio = row.get("update_ratio")
    if row.get("weight_norm") == 0:
        said.append("the kernel is all zeros")
    elif ratio is not None and ratio > UPDATE_HIGH:
        said.append(f"update {ratio:.1e} of the kernel's norm: too large (about 1e-3 is typical)")
    elif ratio is not None and 0 < ratio < UPDATE_LOW or (ratio == 0 and row.get("grad_norm", 0) > 0):
        said.append(f"update {ratio:.1e} of the kernel's norm: too small to learn (about 1e-3 is typical)")
    return "; ".join(said) if said else "ok"


def _largest_change(stds: list[float], shrink: bool) -> tuple[float, int, int]:
    """The largest ratio stds[i] / stds[j] (shrink) or stds[j] / stds[i] over i < j, with its
    1-based depths; zeros count as infinitely small."""
    best, at = 1.0, (0, 0)
    extreme, extreme_at = stds[0], 0  # the largest (shrink) or smallest nonzero std so far
    for j, s in enumerate(stds):
        if j > 0 and extreme > 0:
            ratio = (math.inf if s == 0 else extreme / s) if shrink else (s / extreme if s > 0 else 0.0)
            if ratio > best:
                best, at = ratio, (extreme_at, j)
        if (s > extreme) if shrink else (0 < s < extreme or extreme == 0):
            extreme, extreme_at = s, j
    return best, at[0] + 1, at[1] + 1


def _gradient_lines(rows: list[dict]) -> list[str]:
    """How the kernels' gradient norms change backwards, from the last layer to the first."""
    trained = [r for r in rows if r.get("trainable", True) and r.get("grad_norm") is not None]
    norms = [r["grad_norm"] for r in reversed(trained)]
    if len(norms) < 2 or all(g == 0 for g in norms):
        return ["no gradient reaches any kernel"] if norms else []
    depth = [r["depth"] for r in reversed(trained)]
    lines = []
    shrink, i, j = _largest_change(norms, shrink=True)
    grow, gi, gj = _largest_change(norms, shrink=False)
    if shrink >= WARN_CHANGE:
        lines.append(f"gradients shrink {_x(shrink)} from layer {depth[i - 1]} back to layer {depth[j - 1]}"
                     + (": vanishing gradients" if shrink >= GRADIENT_CHANGE else " (not yet vanishing)"))
    if grow >= WARN_CHANGE:
        lines.append(f"gradients grow {_x(grow)} from layer {depth[gi - 1]} back to layer {depth[gj - 1]}"
                     + (": exploding gradients" if grow >= GRADIENT_CHANGE else " (not yet exploding)"))
    return lines


def summary(rows: list[dict]) -> list[str]:
    """The verdict on the whole depth, first line first."""
    stds = [r["std"] for r in rows]
    lines = []
    if not rows:
        return ["no Dense or Conv layer ran on the batch: nothing to check"]
    if all(s == 0 for s in stds):
        return ["no signal: every layer's activations are 0 (a constant initializer gives every unit the same "
                "value and the same gradient): vanishing signal"]
    zero_from = next((i for i, s in enumerate(stds) if s == 0), None)
    if zero_from is not None:
        lines.append(f"activations are 0 from layer {zero_from + 1} on: vanishing signal")
    shrink, i, j = _largest_change(stds, shrink=True)
    grow, gi, gj = _largest_change(stds, shrink=False)
    if zero_from is None and shrink >= SIGNAL_CHANGE:
        lines.append(f"activations shrink {_x(shrink)} between layer {i} and layer {j}: vanishing signal")
    elif zero_from is None and shrink >= WARN_CHANGE:
        lines.append(f"activations shrink {_x(shrink)} between layer {i} and layer {j} (not yet vanishing)")
    if grow >= SIGNAL_CHANGE:
        lines.append(f"activations grow {_x(grow)} between layer {gi} and layer {gj}: exploding signal")
    elif grow >= WARN_CHANGE:
        lines.append(f"activations grow {_x(grow)} between layer {gi} and layer {gj} (not yet exploding)")
    lines += _gradient_lines(rows)
    alarmed = bool(lines)
    hidden = stds[:-1] if len(stds) > 2 else stds  # the last layer is the outputs (logits), scaled apart
    if len(hidden) >= 2 and hidden[0] > 0 and hidden[-1] > 0:
        factor = (hidden[-1] / hidden[0]) ** (1 / (len(hidden) - 1))
        lines.append(f"the activations' std changes by x{factor:.3g} per layer on average over layers 1-{len(hidden)} "
                     f"({hidden[0]:.3g} -> {hidden[-1]:.3g})")
    if not alarmed:
        lines.insert(0, "the signal keeps its scale through the depth (within 10x)")
    dead = [r["depth"] for r in rows if r["std"] > 0 and (r.get("dead_fraction") or 0) >= DEAD]
    if dead:
        lines.append(f"at least {DEAD:.0%} of the units are dead in {_layers(dead)}")
    trained = [r for r in rows if r.get("trainable", True) and r.get("update_ratio") is not None]
    large = [r["depth"] for r in trained if r["update_ratio"] > UPDATE_HIGH]
    small = [r["depth"] for r in trained if r["update_ratio"] < UPDATE_LOW]
    if large:
        lines.append(f"one step moves the kernel of {_layers(large)} by more than {UPDATE_HIGH:g} of their norm: "
                     "lower optimizer.lr (about 1e-3 per step is typical)")
    if small:
        lines.append(f"one step moves the kernel of {_layers(small)} by less than {UPDATE_LOW:g} of their norm: "
                     "they barely learn at this rate")
    return lines


def _layers(depths: list[int]) -> str:
    return f"layer {depths[0]}" if len(depths) == 1 else f"layers {_spans(depths)}"


def _spans(depths: list[int]) -> str:
    """1, 2, 3, 5 -> "1-3, 5"."""
    spans, start = [], None
    for k, d in enumerate(depths):
        start = d if start is None else start
        if k + 1 == len(depths) or depths[k + 1] != d + 1:
            spans.append(str(d) if d == start else f"{start}-{d}")
            start = None
    return ", ".join(spans)
