"""Beyond value-output: MLP neurons and query-key circuits explained data-free (METHODS.md section 11).

MLP neuron i of block l adds ``act(ln_2(x) . read_i + b_i) * write_i`` to the residual stream:
- write vector ``write_i`` (D,): row i of ``mlp_out``, times the block's MLP LayerScale when it has one (so it
  is what the neuron really adds); a residual direction like any other, mapped to the joint space through
  ln_post and proj (:func:`weightscope.decompose.joint.to_joint`) and explained with COMP, both signs.
- read vector ``read_i`` (D,): column i of ``mlp_in``, times ln_2's scale (folded; the neuron fires for inputs
  whose normalised-but-unscaled direction aligns with it). Mapped and explained the same way (SITH's
  convention for read directions).
- ranking score per layer: ``|joint(write_i)| * |read_i|``, with joint(v) = ``(gamma_post * (v - mean v)) @ proj``
  before normalisation: how much of a unit activation reaches the embedding, times how strongly the neuron
  responds to a unit input. Neurons are explained in this order.

Query-key: ``W_QK^h = read_q[h] read_k[h]^T`` (factored SVD in :mod:`weightscope.decompose`); left singular
vectors are what the query token must contain, right ones what the key token must contain ("attends from ...
to ..."). The positional embedding (patch tokens, centred over tokens: a shift common to all keys cancels in
the softmax) projected onto each key direction shows positional attention; ``QKReport.position`` is the
variance of that projection relative to a random direction's (1 = chance, D for a direction holding all of it).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from tqdm.auto import tqdm

from ..decompose.head_svd import _select, decompose_model
from ..core.errors import WeightscopeError
from .directions import Direction, HeadReport, explained_direction
from ..decompose.joint import to_joint
from ..core.linalg import solve_rows
from ..core.weights import VisionWeights

NEURON_SIDES = ("write", "read")
QK_SIDES = ("query", "key")


def neuron_vectors(weights: VisionWeights, layer: int, fold_ln: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(write (F, D), read (F, D)) of every neuron of block ``layer``; see the module docstring."""
    lw = weights.layers[layer]
    write = lw.mlp_out if lw.layer_scale_mlp is None else lw.mlp_out * lw.layer_scale_mlp
    read = lw.mlp_in.T
    if fold_ln and lw.ln_2 is not None:
        read = read * lw.ln_2.scale
    return write, read


def joint_matrix(weights: VisionWeights) -> np.ndarray:
    """M (D, E) with ``v @ M = (gamma_post * (v - mean v)) @ proj``: the linear joint map before normalisation."""
    GP = weights.ln_post.scale[:, None] * weights.proj
    return GP - GP.mean(axis=0)  # (v - mean v 1) G P = v (G P - 1 mean_rows(G P))


def joint_preimage(weights: VisionWeights, z: np.ndarray) -> np.ndarray:
    """Least-squares, minimum-norm residual vector(s) v with ``v @ joint_matrix = z``: z (E,) or (n, E) -> (D,) or (n, D)."""
    return solve_rows(joint_matrix(weights), z)


def neuron_scores(weights: VisionWeights, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(score, joint_norm, read_norm), each (F,): score = |write @ joint_matrix| * |read| (module docstring)."""
    write, read = neuron_vectors(weights, layer)
    joint_norm = np.linalg.norm(write @ joint_matrix(weights), axis=1)
    read_norm = np.linalg.norm(read, axis=1)
    return joint_norm * read_norm, joint_norm, read_norm


@dataclass
class NeuronReport:
    """One MLP neuron: its ranking score (and factors), its rank within the layer, its explained directions."""

    layer: int
    neuron: int
    rank: int
    score: float
    joint_norm: float
    read_norm: float
    directions: list[Direction]

    def direction(self, side: str = "write", sign: int = 1) -> Direction:
        for d in self.directions:
            if d.side == side and d.sign == sign:
                return d
        raise WeightscopeError(f"layer {self.layer} neuron {self.neuron} has no explained {side} side with sign {sign:+d}")


@dataclass
class QKReport(HeadReport):
    """A head's query-key directions (sides "query" and "key"); position: per key direction, the positional
    embedding's variance along it relative to a random direction's (module docstring)."""

    position: list[float] = field(default_factory=list)


def position_ratio(weights: VisionWeights, directions: np.ndarray) -> np.ndarray:
    """Positional variance along unit directions (r, D), relative to the mean over all directions (r,).

    Uses the patch tokens' positional embeddings, centred over tokens. 1 is what a random direction gets.
    """
    pos = weights.stem.positional_embedding[1:]
    pos = pos - pos.mean(axis=0)
    total = float((pos ** 2).sum()) / pos.shape[1]
    proj = pos @ np.atleast_2d(directions).T
    return (proj ** 2).sum(axis=0) / total if total > 0 else np.zeros(proj.shape[1])


def _run(signals, dictionary, explainer, progress):
    return explainer.explain(np.vstack(signals), dictionary, both_signs=True, progress=progress).split_signs()


def explain_neurons(weights: VisionWeights, dictionary: np.ndarray, explainer, *, layers=None,
                    n_neurons: int | None = None, sides=NEURON_SIDES, joint_mode: str = "linear", image_mean=None,
                    progress: bool = True) -> dict[tuple[int, int], NeuronReport]:
    """Explain the leading ``n_neurons`` neurons (by score; default all) of each chosen layer.

    dictionary (M, E): concept embeddings, rows matching ``explainer.concepts``; explainer: the
    ``ConceptExplainer`` whose solver settings are used. Returns {(layer, neuron): NeuronReport}
    ordered by layer, then rank. Raises WeightscopeError for bad sides, counts or indices.
    """
    if not sides or any(s not in NEURON_SIDES for s in sides):
        raise WeightscopeError(f"neuron sides must be a non-empty subset of {NEURON_SIDES}, got {tuple(sides)}")
    if n_neurons is not None and (isinstance(n_neurons, bool) or not isinstance(n_neurons, int) or n_neurons < 1):
        raise WeightscopeError(f"n_neurons must be a positive integer or None, got {n_neurons!r}")
    reports, keys, signals = {}, [], []
    for l in tqdm(_select(layers, weights.n_layers, "layer"), desc="MLP neurons", unit="layer", disable=not progress):
        score, jn, rn = neuron_scores(weights, l)
        order = np.argsort(-score, kind="stable")[:n_neurons]
        write, read = neuron_vectors(weights, l)
        for r, i in enumerate(order):
            reports[l, int(i)] = NeuronReport(l, int(i), r, float(score[i]), float(jn[i]), float(rn[i]), [])
        for side in sides:
            vectors = (write if side == "write" else read)[order]
            signals.append(to_joint(weights, vectors, mode=joint_mode, image_mean=image_mean))
            keys.extend((l, int(i), side) for i in order)
    if keys:
        plus, minus = _run(signals, dictionary, explainer, progress)
        concepts = explainer.concepts
        for row, (l, i, side) in enumerate(keys):
            for sign, ex in ((1, plus), (-1, minus)):
                reports[l, i].directions.append(explained_direction(ex, row, concepts, i, side, sign))
    return reports


def explain_qk(weights: VisionWeights, dictionary: np.ndarray, explainer, *, layers=None, heads=None,
               n_directions: int | None = None, joint_mode: str = "linear", image_mean=None,
               progress: bool = True) -> dict[tuple[int, int], QKReport]:
    """Explain the query-side and key-side singular directions of each chosen head's W_QK (both signs).

    dictionary (M, E): concept embeddings, rows matching ``explainer.concepts`` (a ``ConceptExplainer``).

    Only directions above the weights' rounding level (``HeadSVD.rank``) are explained. Raises WeightscopeError
    for layers whose logits are not bilinear (QK-norm, cosine attention), bad indices or counts.
    """
    if n_directions is not None and (isinstance(n_directions, bool) or not isinstance(n_directions, int)
                                     or n_directions < 1):
        raise WeightscopeError(f"n_directions must be a positive integer or None, got {n_directions!r}")
    svds = decompose_model(weights, layers=layers, heads=heads, kind="qk", progress=progress)
    reports, keys, signals = {}, [], []
    for (l, h), svd in svds.items():
        r = svd.rank if n_directions is None else min(n_directions, svd.rank)
        reports[l, h] = QKReport(l, h, svd.s.tolist(), svd.groups, [], svd.rank,
                                 position=np.round(position_ratio(weights, svd.write[:r]), 4).tolist())
        for side, vectors in (("query", svd.read), ("key", svd.write)):
            if r:
                signals.append(to_joint(weights, vectors[:r], mode=joint_mode, image_mean=image_mean))
                keys.extend((l, h, side, i) for i in range(r))
    if keys:
        plus, minus = _run(signals, dictionary, explainer, progress)
        concepts = explainer.concepts
        group_of = {(key, i): g for key, svd in svds.items() for g in svd.groups for i in g}
        for row, (l, h, side, i) in enumerate(keys):
            for sign, ex in ((1, plus), (-1, minus)):
                reports[l, h].directions.append(explained_direction(ex, row, concepts, i, side, sign,
                                                                    group_of.get(((l, h), i))))
    return reports


def _product_sq_norm(X: np.ndarray, Y: np.ndarray) -> float:
    """``|X Y|_F^2 = trace((X^T X)(Y Y^T))`` for X (D, r), Y (r, D): never forms the D x D product."""
    return float(np.sum((X.T @ X) * (Y @ Y.T)))


def change_by_kind(base: VisionWeights, tuned: VisionWeights) -> dict[str, np.ndarray]:
    """Where two checkpoints of one architecture differ: relative Frobenius change per layer and kind.

    Returns {"vo", "qk", "mlp_in", "mlp_out": (L,) arrays}: for "vo" / "qk" ``sqrt(sum_h |W'_h - W_h|^2) /
    sqrt(sum_h |W_h|^2)`` over the heads' value-output / query-key matrices (from the factors: ``W' - W =
    [A', -A] [B'; B]``), for the MLP ``|M' - M|_F / |M|_F`` of the input and output weights (write side with
    LayerScale, read side with ln_2's scale, as :func:`neuron_vectors`). Raises WeightscopeError when the
    architectures differ or a layer's logits are not bilinear.
    """
    if (base.n_layers, base.width, base.n_heads) != (tuned.n_layers, tuned.width, tuned.n_heads):
        raise WeightscopeError(f"the checkpoints differ in architecture (layers, width, heads): "
                               f"{(base.n_layers, base.width, base.n_heads)} vs {(tuned.n_layers, tuned.width, tuned.n_heads)}")
    from ..decompose.head_svd import head_factors

    out = {kind: np.zeros(base.n_layers) for kind in ("vo", "qk", "mlp_in", "mlp_out")}
    for l in range(base.n_layers):
        for kind in ("vo", "qk"):
            diff = ref = 0.0
            for h in range(base.n_heads):
                A0, B0 = head_factors(base, l, h, kind)
                A1, B1 = head_factors(tuned, l, h, kind)
                diff += _product_sq_norm(np.hstack([A1, -A0]), np.vstack([B1, B0]))
                ref += _product_sq_norm(A0, B0)
            out[kind][l] = _relative(np.sqrt(max(diff, 0.0)), np.sqrt(ref))
        (w0, r0), (w1, r1) = neuron_vectors(base, l), neuron_vectors(tuned, l)
        out["mlp_in"][l] = _relative(np.linalg.norm(r1 - r0), np.linalg.norm(r0))
        out["mlp_out"][l] = _relative(np.linalg.norm(w1 - w0), np.linalg.norm(w0))
    return out


def _relative(change: float, reference: float) -> float:
    """change / reference; a zero reference gives 0 when nothing changed (a layer zero in both) and inf otherwise."""
    if reference > 0:
        return float(change / reference)
    return np.inf if change > 0 else 0.0


def neurons_to_list(reports: dict) -> list[dict]:
    return [asdict(rep) for _, rep in sorted(reports.items(), key=lambda kv: (kv[0][0], kv[1].rank))]


def neurons_from_list(items: list[dict]) -> dict[tuple[int, int], NeuronReport]:
    return {(d["layer"], d["neuron"]): NeuronReport(**{**d, "directions": [Direction(**x) for x in d["directions"]]})
            for d in items}


def qk_to_list(reports: dict) -> list[dict]:
    return [{**asdict(rep), "dead": rep.dead} for _, rep in sorted(reports.items())]


def qk_from_list(items: list[dict]) -> dict[tuple[int, int], QKReport]:
    return {(d["layer"], d["head"]): QKReport(d["layer"], d["head"], d["s"], d["groups"],
                                              [Direction(**x) for x in d["directions"]], d.get("rank"),
                                              d.get("position", []))
            for d in items}


def summary_lines(neurons: dict, qk: dict, n_show: int = 3, n_concepts: int = 3) -> list[str]:
    """Printed summary of neuron and query-key explanations (first ``n_show`` per layer / head)."""
    lines = []
    for (l, h), rep in sorted(qk.items()):
        lines.append(f"L{l:<2} H{h:<2} QK  s = " + " ".join(f"{x:.2f}" for x in rep.s[:min(n_show, rep.rank)]))
        for i in rep.explained("query")[:n_show]:
            q, key = rep.direction(i, "query", 1), rep.direction(i, "key", 1)
            pos = f" [position x{rep.position[i]:.1f}]" if i < len(rep.position) else ""
            lines.append(f"    q{i}: {q.label(n_concepts)}  ->  k{i}: {key.label(n_concepts)}{pos}")
    by_layer: dict[int, list[NeuronReport]] = {}
    for rep in neurons.values():
        by_layer.setdefault(rep.layer, []).append(rep)
    for l in sorted(by_layer):
        lines.append(f"L{l:<2} MLP neurons (score = |joint(write)| x |read|)")
        for rep in sorted(by_layer[l], key=lambda r: r.rank)[:n_show]:
            sides = [d for d in rep.directions if d.sign == 1]
            text = "; ".join(f"{d.side}: {d.label(n_concepts)}" for d in sides)
            lines.append(f"    n{rep.neuron} ({rep.score:.3g}): {text}")
    return lines
