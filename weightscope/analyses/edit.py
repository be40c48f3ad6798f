"""Weight-space edits: rescale chosen singular directions of heads' value-output matrices (METHODS.md section 6).

An :class:`Edit` names one singular pair (or a degenerate group of them) of one head and a factor alpha:
``W_VO' = U diag(alpha * s) V^T`` on the chosen indices, every other pair unchanged. alpha = 0 removes the
direction, alpha < 0 flips it, alpha > 1 amplifies it.

Write-back keeps the read factor A fixed and solves for the write factor. For any X with ``A X = U_S`` the
update ``B' = B + X diag((alpha_S - 1) s_S) V_S^T`` gives ``A B' = W + U_S diag((alpha_S - 1) s_S) V_S^T``
exactly. ``X = B V_S diag(1 / s_S)`` is such an X (``A B V_S = U_S diag(s_S)``) and equals ``pinv(A) U_S``
whenever A has full column rank, so ``B' = B + (B V_S) diag(alpha_S - 1) V_S^T``: no pseudo-inverse, no
division by small singular values, cost O(D dh |S|). Before that the head's value bias is folded into the
output bias (``b_o += b_v[h] B_h``, ``b_v[h] = 0``); attention weights sum to 1, so this is exact and the
constant the head adds stays what it was.

The basis: the SVD is that of ``decompose.head_factors(..., fold_ln, center_write)``. The default is the raw
``W_VO = read_v[h] @ write_o[h]``, the basis ``decompose_model`` and ``inspection.inspect_model`` report, so an
index from an Inspection names the same direction here. The update works in the other bases too: with ln_1's
scale folded in only U, s, V change; with the write side centred (``B_eff = B P``, P removes the mean, which
no later LayerNorm sees) ``V_S`` is orthogonal to the all-ones vector and
``B' = B + (B_eff V_S) diag(alpha_S - 1) V_S^T`` makes the effective matrix ``U diag(alpha s) V^T``.
Selection and edit must use the same basis; the defaults agree and the sidecar records it.

``write_o`` already holds the scales a head's output meets on its way into the residual stream (head scales,
LayerScale; see ``weightscope.models.adapters``), so the edit acts on the map the head really adds; the adapter divides
those scales out again when it writes the edited factors into the model.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from ..models.checkpoints import clean_state_dict, provenance, sidecar_record, unwrap_module
from ..models.checkpoints import sha256_file, sidecar_path  # noqa: F401  (re-exported: part of this module's API)
from ..decompose.head_svd import HeadSVD, check_index, decompose_head
from ..core.errors import WeightscopeError
from ..core.fileio import json_default, outputs, refuse_inputs, write_atomic
from ..core.weights import VisionWeights

#: Decomposition settings edits and selections use unless told otherwise (recorded in the sidecar).
BASIS = {"fold_ln": False, "center_write": False, "rtol": 1e-3}


@dataclass(frozen=True)
class Edit:
    """Rescale singular pair(s) ``index`` of head ``head`` in layer ``layer`` by ``alpha``.

    index: one index into the head's singular values (descending), or a tuple of indices (a degenerate group,
    whose span is all that is defined). reason: why it was chosen (free text, shown and saved).
    score: the selection score, when a selection helper produced the edit (None otherwise).
    """

    layer: int
    head: int
    index: int | tuple[int, ...]
    alpha: float
    reason: str = ""
    score: float | None = None

    @property
    def indices(self) -> tuple[int, ...]:
        return tuple(self.index) if isinstance(self.index, (tuple, list)) else (self.index,)

    def label(self) -> str:
        """Short id, e.g. ``L3.H1.#0`` or ``L3.H1.#4+5`` for a group."""
        return f"L{self.layer}.H{self.head}.#{'+'.join(str(i) for i in self.indices)}"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["index"] = list(self.indices) if len(self.indices) > 1 else self.indices[0]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Edit":
        index = d["index"]
        return cls(int(d["layer"]), int(d["head"]), tuple(index) if isinstance(index, list) else index,
                   float(d["alpha"]), d.get("reason", ""), d.get("score"))


_EDIT_RE = re.compile(r"^\s*(-?\d+)\s*[:.]\s*(-?\d+)\s*[:.]\s*(\d+(?:\s*\+\s*\d+)*)\s*(?:=\s*(\S+))?\s*$")


def parse_edit(text: str, alpha: float = 0.0, reason: str = "explicit") -> Edit:
    """Parse ``"LAYER:HEAD:INDEX[=ALPHA]"`` (a group as ``INDEX+INDEX``), e.g. ``"3:1:0=0.5"``, ``"5:0:2+3"``."""
    m = _EDIT_RE.match(str(text))
    if not m:
        raise WeightscopeError(f"cannot read edit {text!r}: expected LAYER:HEAD:INDEX[=ALPHA], e.g. 3:1:0=0.5 "
                               "(a degenerate group as 3:1:4+5)")
    idx = tuple(int(i) for i in m.group(3).split("+"))
    if m.group(4) is not None:
        try:
            alpha = float(m.group(4))
        except ValueError:
            raise WeightscopeError(f"alpha in edit {text!r} is not a number: {m.group(4)!r}") from None
    return Edit(int(m.group(1)), int(m.group(2)), idx if len(idx) > 1 else idx[0], alpha, reason)


def _check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)):
        raise WeightscopeError(f"alpha must be a real number (0 removes, <0 flips, >1 amplifies), got {alpha!r}")
    if not math.isfinite(float(alpha)):
        raise WeightscopeError(f"alpha must be finite (0 removes, <0 flips, >1 amplifies), got {alpha!r}")
    return float(alpha)


def _plan(weights: VisionWeights, edits: Iterable[Edit], fold_ln: bool, center_write: bool, rtol: float,
          expand_groups: bool) -> tuple[dict[tuple[int, int], tuple[HeadSVD, dict[int, float]]], list[Edit]]:
    """Validate edits, decompose each touched head once, and map every singular index to its alpha.

    Returns ({(layer, head): (svd, {index: alpha})}, the resolved edits (layer/head non-negative, indices
    sorted, degenerate groups completed when ``expand_groups``)).
    """
    edits = list(edits)
    plan: dict[tuple[int, int], tuple[HeadSVD, dict[int, float]]] = {}
    resolved: list[Edit] = []
    for e in edits:
        if not isinstance(e, Edit):
            raise WeightscopeError(f"edits must be Edit records (see weightscope.analyses.edit.parse_edit), got {e!r}")
        layer = check_index(e.layer, weights.n_layers, "layer")
        head = check_index(e.head, weights.n_heads, "head")
        alpha = _check_alpha(e.alpha)
        if (layer, head) not in plan:
            # single-threaded BLAS: these (D, dh) problems are tiny, and threads spin on busy cores (decompose.py)
            with threadpool_limits(limits=1, user_api="blas"):
                svd = decompose_head(weights, layer, head, "vo", fold_ln, center_write, rtol)
            plan[(layer, head)] = (svd, {})
        svd, alphas = plan[(layer, head)]
        if not e.indices:
            raise WeightscopeError(f"edit of layer {layer} head {head} names no singular index")
        if svd.dead:
            raise WeightscopeError(f"layer {layer} head {head} writes nothing (no singular value above the rounding "
                                   "level of its weights): it has no direction to edit")
        idx = set()
        for i in e.indices:
            # directions at rounding level are no directions (decompose.py): rescaling them changes nothing
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < svd.rank:
                raise WeightscopeError(f"singular index {i!r} of layer {layer} head {head} is out of range: "
                                       f"the head has {svd.rank} directions above rounding level (0-{svd.rank - 1})")
            idx.add(int(i))
        if expand_groups:
            # inside a degenerate group only the span is defined: edit the whole group alike
            for g in svd.groups:
                if idx & set(g):
                    idx |= set(g)
        for i in sorted(idx):
            if i in alphas and alphas[i] != alpha:
                raise WeightscopeError(f"conflicting edits of layer {layer} head {head} index {i}: "
                                       f"alpha {alphas[i]:g} and {alpha:g}; give each direction once")
            alphas[i] = alpha
        idx_t = tuple(sorted(idx))
        resolved.append(dataclasses.replace(e, layer=layer, head=head, alpha=alpha,
                                            index=idx_t if len(idx_t) > 1 else idx_t[0]))
    return plan, resolved


def resolve_edits(weights: VisionWeights, edits: Iterable[Edit], *, fold_ln: bool = BASIS["fold_ln"],
                  center_write: bool = BASIS["center_write"], rtol: float = BASIS["rtol"],
                  expand_groups: bool = True) -> list[Edit]:
    """The edits as they will be applied: validated, negative layer/head counted from the end, and an index in
    a degenerate group widened to the whole group (``expand_groups``). Raises WeightscopeError on bad input."""
    return _plan(weights, edits, fold_ln, center_write, rtol, expand_groups)[1]


def edit_weights(weights: VisionWeights, edits: Iterable[Edit], *, fold_ln: bool = BASIS["fold_ln"],
                 center_write: bool = BASIS["center_write"], rtol: float = BASIS["rtol"],
                 expand_groups: bool = True) -> VisionWeights:
    """A new VisionWeights with the edits applied; ``weights`` is not modified.

    Only the edited heads change: their write factor ``write_o[h]`` (dh, D), their value bias (zeroed) and the
    layer's output bias ``bias_o`` (D,), which absorbs ``bias_v[h] @ write_o[h]``. Edited layers get new
    attention arrays; every other array is shared with ``weights`` (copying a large tower's float64 arrays
    costs seconds), so treat both as read-only, as everything in weightscope does.
    """
    plan, _ = _plan(weights, edits, fold_ln, center_write, rtol, expand_groups)
    out = copy.copy(weights)
    out.layers, out.meta = list(weights.layers), dict(weights.meta)
    for layer in sorted({layer for layer, _ in plan}):
        lw = weights.layers[layer]
        out.layers[layer] = dataclasses.replace(lw, attn=dataclasses.replace(
            lw.attn, write_o=lw.attn.write_o.copy(), bias_v=lw.attn.bias_v.copy(), bias_o=lw.attn.bias_o.copy()))
    for (layer, head), (svd, alphas) in plan.items():
        attn = out.layers[layer].attn
        B = attn.write_o[head].copy()
        attn.bias_o += attn.bias_v[head] @ B
        attn.bias_v[head] = 0.0
        sel = np.array(sorted(alphas), dtype=np.int64)
        V = svd.write[sel]  # (|S|, D) rows = right singular vectors
        factor = np.array([alphas[i] for i in sel]) - 1.0
        B_eff = B - B.mean(axis=1, keepdims=True) if center_write else B
        attn.write_o[head] = B + ((B_eff @ V.T) * factor) @ V
    return out


def _module(model):
    """(torch module, wrapper or None) for an open_clip CLIP or a LoadedModel."""
    inner = getattr(model, "model", None)
    return (inner, model) if inner is not None else (model, None)


@dataclass
class EditPlan:
    """What an edit will do before it is applied: the model's neutral description, the edits resolved on it, and
    the singular values (each edit's indices) it rescales."""

    weights: VisionWeights
    edits: list[Edit]
    sigmas: list[np.ndarray]


def plan_edits(loaded, choose) -> EditPlan:
    """Describe ``loaded``, choose edits with ``choose(weights) -> list[Edit]`` (a selection by query, by concept or
    given directions) and resolve them (:func:`resolve_edits`): the plan that the command line prints, and that
    :func:`apply_edits` then applies (``weights=plan.weights``)."""
    from ..models.adapters import describe_model

    weights = describe_model(loaded.model if hasattr(loaded, "model") else loaded)
    resolved = resolve_edits(weights, choose(weights))
    sigmas = [decompose_head(weights, e.layer, e.head).s[list(e.indices)] for e in resolved]
    return EditPlan(weights, resolved, sigmas)


def apply_edits(model, edits: Iterable[Edit], *, fold_ln: bool = BASIS["fold_ln"],
                center_write: bool = BASIS["center_write"], rtol: float = BASIS["rtol"],
                expand_groups: bool = True, weights: VisionWeights | None = None):
    """An edited deep copy of ``model`` (an open_clip CLIP, or a LoadedModel -> a LoadedModel); input untouched.

    weights: the model's neutral description when the caller already has it (saves describing it again).
    """
    from ..models.adapters import describe_model, write_attention

    edits = list(edits)
    module, wrapper = _module(model)
    weights = weights if weights is not None else describe_model(module)
    edited = edit_weights(weights, edits, fold_ln=fold_ln, center_write=center_write, rtol=rtol,
                          expand_groups=expand_groups)
    new = copy.deepcopy(module)
    for layer in sorted({e.layer % weights.n_layers for e in edits}):
        write_attention(new, layer, edited.layers[layer].attn)
    _record_edits(module, new, resolve_edits(weights, edits, fold_ln=fold_ln, center_write=center_write, rtol=rtol,
                                             expand_groups=expand_groups), fold_ln, center_write, rtol)
    if wrapper is None:
        return new
    return dataclasses.replace(wrapper, model=new, source=f"{wrapper.source}+edited")


def _record_edits(module, new, resolved: list[Edit], fold_ln: bool, center_write: bool, rtol: float) -> None:
    """Provenance of the edited copy (what save_checkpoint's sidecar records): the edits as applied, their basis,
    and the input as source (nested, when the input was itself edited in memory)."""
    prov = provenance(module)
    source = dict(prov.get("source") or {})
    if prov.get("edits"):
        source = {"model": source.get("model"), "source": f"{source.get('source')}+edited", "provenance": prov}
    new._weightscope_provenance = {
        "architecture": prov.get("architecture"), "source": source,
        "basis": {"fold_ln": fold_ln, "center_write": center_write, "rtol": rtol},
        "edits": [e.to_dict() for e in resolved]}


# ------------------------------------------------------------------------------------------------ MLP neurons

@dataclass(frozen=True)
class NeuronEdit:
    """Rescale MLP neuron ``neuron`` of block ``layer``: its write vector (row of mlp_out) times ``alpha``
    (0 removes what the neuron adds, < 0 flips it, > 1 amplifies it; METHODS.md section 11)."""

    layer: int
    neuron: int
    alpha: float
    reason: str = "explicit"


def edit_neuron_weights(weights: VisionWeights, edits: Iterable[NeuronEdit]) -> VisionWeights:
    """A new VisionWeights with the neuron edits applied (edited layers get a new ``mlp_out``; others shared).

    Raises WeightscopeError for bad indices or alpha, before anything changes.
    """
    edits = list(edits)
    rows = []
    for e in edits:
        layer = check_index(e.layer, weights.n_layers, "layer")
        rows.append((layer, check_index(e.neuron, weights.layers[layer].mlp_out.shape[0], "neuron"),
                     _check_alpha(e.alpha)))
    out = copy.copy(weights)
    out.layers, out.meta = list(weights.layers), dict(weights.meta)
    for layer in sorted({r[0] for r in rows}):
        out.layers[layer] = dataclasses.replace(weights.layers[layer], mlp_out=weights.layers[layer].mlp_out.copy())
    for layer, neuron, alpha in rows:
        out.layers[layer].mlp_out[neuron] *= alpha
    return out


def apply_neuron_edits(model, edits: Iterable[NeuronEdit], *, weights: VisionWeights | None = None):
    """An edited deep copy of ``model`` (an open_clip CLIP, or a LoadedModel -> a LoadedModel); input untouched.

    The edited MLP weights are written back exactly (``adapters.write_mlp``), so ``save_checkpoint`` of the
    result loads in stock open_clip.
    """
    from ..models.adapters import describe_model, write_mlp

    edits = list(edits)
    module, wrapper = _module(model)
    weights = weights if weights is not None else describe_model(module)
    edited = edit_neuron_weights(weights, edits)
    new = copy.deepcopy(module)
    for layer in sorted({e.layer % weights.n_layers for e in edits}):
        write_mlp(new, layer, edited.layers[layer])
    prov = provenance(module)
    new._weightscope_provenance = {"architecture": prov.get("architecture"), "source": dict(prov.get("source") or {}),
                                   "edits": list(prov.get("edits") or []) + [
                                       {"kind": "mlp_neuron", **dataclasses.asdict(e)} for e in edits]}
    if wrapper is None:
        return new
    return dataclasses.replace(wrapper, model=new, source=f"{wrapper.source}+edited")


# ------------------------------------------------------------------------------------------------ saving

def save_checkpoint(model, path: str | Path, *, selection: dict | None = None, metadata: dict | None = None,
                    overwrite: bool = False, protect: Iterable[str | Path] = ()) -> tuple[Path, Path]:
    """Save the full CLIP state dict as .safetensors (stock ``open_clip.create_model(name, pretrained=path)``
    loads it) and a JSON sidecar ``<path>.json`` (:func:`weightscope.models.checkpoints.sidecar_record`: architecture,
    source with the base checkpoint's sha256, basis, edits as applied by :func:`apply_edits`, ``selection``,
    the ``metadata`` entries, and the checkpoint's sha256), so that weightscope loads the file by path alone.

    model: an open_clip CLIP or a LoadedModel; DataParallel and torch.compile wrappers are looked through, so the
    keys are the bare model's. Both files are written atomically; existing files are kept unless ``overwrite``.
    Both are written together or not at all. ``protect``: files and folders the run read (input checkpoint,
    vocabularies ...): no output may be one or lie inside one, even with ``overwrite``; the shipped checkpoints are
    always protected.
    Returns (checkpoint, sidecar). Raises WeightscopeError for a bad path or an existing file.
    """
    from safetensors.torch import save

    path = Path(path)
    side = sidecar_path(path)
    if path.suffix != ".safetensors":
        raise WeightscopeError(f"output path {path} must end in .safetensors (open_clip reads that format)")
    refuse_inputs([path, side], protect)  # the shipped checkpoints are always protected
    if not overwrite:
        for p in (path, side):
            if p.exists():
                raise WeightscopeError(f"{p} already exists; choose another output path or pass --overwrite")
    module = unwrap_module(_module(model)[0])
    data = save(clean_state_dict(module), metadata={"format": "pt", "producer": "weightscope.edit"})
    record = sidecar_record(module, hashlib.sha256(data).hexdigest(), selection, metadata)
    text = json.dumps(record, indent=2, default=json_default) + "\n"
    with outputs():  # checkpoint and sidecar together, or neither
        write_atomic(path, data, overwrite=overwrite)
        write_atomic(side, text, overwrite=overwrite)
    return path, side



# ------------------------------------------------------------------------------------------------ evaluation

def evaluate_edit(before, after, tokenizer, images, labels, classnames, templates, groups=None,
                  preprocess=None, batch_size: int = 256) -> dict:
    """Zero-shot accuracy (overall, and per group when ``groups`` is given) of a model before and after an edit.

    before / after: open_clip CLIPs (or LoadedModels) sharing a text tower; edits change only the vision tower,
    so one classifier (C, E), built from ``before``'s text tower with ``classnames`` x ``templates``, serves
    both. images, labels (N,), groups (N,), preprocess: as in :func:`weightscope.analyses.zeroshot.zero_shot_accuracy`.
    Returns {"before": result, "after": result, "change": {"accuracy": a - b, ["worst_accuracy": ...,
    "groups": {g: a - b}]}} with accuracies as fractions.
    """
    from .zeroshot import build_classifier, zero_shot_accuracy

    b_mod, a_mod = _module(before)[0], _module(after)[0]
    clf = build_classifier(b_mod, tokenizer, classnames, templates)
    res = {k: zero_shot_accuracy(m, images, labels, clf, groups=groups, preprocess=preprocess, batch_size=batch_size)
           for k, m in (("before", b_mod), ("after", a_mod))}
    b, a = res["before"], res["after"]
    change = {"accuracy": a["accuracy"] - b["accuracy"]}
    if groups is not None:
        change["worst_accuracy"] = a["worst_accuracy"] - b["worst_accuracy"]
        change["groups"] = {g: a["groups"][g] - b["groups"][g] for g in b["groups"]}
    res["change"] = change
    return res
