"""A zoo at a glance: the family tree, the change of every checkpoint by kind and layer, and spectral drift.

    from weightscope.analyses.zoo.analysis import analyse_zoo
    zoo = analyse_zoo("bundled", [("A", "a.safetensors"), ("B", "b.safetensors")])
    print(zoo.tree.summary())

The base and every member are loaded one at a time. Per member and layer: the relative change
||W_t - W_b||_F / ||W_b||_F of each block matrix (``spectra.MATRICES``) and of the three kinds of the comparison
(VO: v and o; QK: q and k; MLP: mlp_in and mlp_out; energy-weighted: sqrt(sum ||dW||^2 / sum ||W||^2));
spectral figures of base and members (``spectra.model_spectra``; a member's may come from the harness's saved
results) and their drift; the family tree of base and members (``lineage.family_tree``).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

KINDS = {"VO": ("v", "o"), "QK": ("q", "k"), "MLP": ("mlp_in", "mlp_out")}


@dataclass
class Zoo:
    """base: the base's name in the tree; members: member names, input order; tree: lineage.FamilyTree;
    change: {member: [{"layer", "matrix" (a block matrix or a kind VO/QK/MLP), "rel_change"}]};
    spectra: {name: model_spectra rows} (base included); drift: {member: spectral_drift rows}."""

    base: str
    members: list[str]
    tree: object
    change: dict
    spectra: dict
    drift: dict = field(default_factory=dict)

    def kind_change(self, member: str) -> dict[str, float]:
        """{kind: relative change over all layers} of one member (energy-weighted, as per layer)."""
        rows = [r for r in self.change[member] if r["matrix"] in KINDS]
        return {k: math.sqrt(sum(r["d2"] for r in rows if r["matrix"] == k) /
                             max(sum(r["w2"] for r in rows if r["matrix"] == k), 1e-300)) for k in KINDS}

    def to_dict(self) -> dict:
        return {"format": "weightscope-zoo/1", "base": self.base, "members": self.members,
                "tree": self.tree.to_dict(), "change": self.change, "spectra": self.spectra, "drift": self.drift}

    def to_json(self, path: str | Path | None = None):
        from ...core.fileio import write_atomic

        text = json.dumps(self.to_dict(), indent=1, default=float)
        return write_atomic(path, text) if path is not None else text


def matrix_changes(base_weights, tuned_weights) -> list[dict]:
    """Per layer: the relative change of each block matrix and of each kind (module doc), with the squared norms
    ("d2": ||dW||_F^2, "w2": ||W_b||_F^2) the kinds are summed from."""
    from .spectra import block_matrices

    rows = []
    for li, (lb, lt) in enumerate(zip(base_weights.layers, tuned_weights.layers)):
        mb, mt = block_matrices(lb), block_matrices(lt)
        sq = {}
        for name in mb:
            d2 = float(np.sum((np.asarray(mt[name], np.float64) - np.asarray(mb[name], np.float64)) ** 2))
            w2 = float(np.sum(np.asarray(mb[name], np.float64) ** 2))
            sq[name] = (d2, w2)
            rows.append({"layer": li, "matrix": name, "rel_change": math.sqrt(d2 / w2) if w2 > 0 else math.nan,
                         "d2": d2, "w2": w2})
        for kind, names in KINDS.items():
            d2, w2 = sum(sq[n][0] for n in names), sum(sq[n][1] for n in names)
            rows.append({"layer": li, "matrix": kind, "rel_change": math.sqrt(d2 / w2) if w2 > 0 else math.nan,
                         "d2": d2, "w2": w2})
    return rows


def analyse_zoo(base: str, members, *, model: str | None = None, spectra: dict | None = None,
                loading=None, progress: bool = True, **tree_options) -> Zoo:
    """The zoo of ``base`` (a spec) and ``members`` ((name, spec) pairs): see the module doc.

    spectra: {member name: model_spectra rows} already computed (None or a missing name: computed here);
    loading: how specs are loaded (``compare.SpecLoading``; ``weightscope.bundled.spec_loading()`` knows the
    bundled model); tree_options: ``lineage.family_tree``'s direction, direction_weight. Raises WeightscopeError for a member
    that cannot be loaded or has another architecture."""
    from tqdm.auto import tqdm

    from ..compare import architecture_of, load_checkpoint
    from ...models.adapters import describe_model
    from .lineage import family_tree, weight_blocks
    from .spectra import model_spectra, spectral_drift

    members = [(str(a), str(b)) for a, b in members]
    names = [n for n, _ in members]
    base_name = "base" if "base" not in names else f"base ({base})"
    loaded = load_checkpoint(base, model, loading)
    model = model or architecture_of(loaded)
    base_w = describe_model(loaded)
    del loaded
    blocks = [weight_blocks(base_w)]
    out_spectra = {base_name: model_spectra(base_w)}
    change, drift = {}, {}
    for name, spec in tqdm(members, desc="zoo", unit="model", disable=not progress):
        w = describe_model(load_checkpoint(spec, model, loading))
        blocks.append(weight_blocks(w))
        change[name] = matrix_changes(base_w, w)
        given = (spectra or {}).get(name)
        out_spectra[name] = given if given is not None else model_spectra(w)
        drift[name] = spectral_drift(out_spectra[base_name], out_spectra[name])
    tree = family_tree([base_name, *names], blocks, **tree_options)
    return Zoo(base_name, names, tree, change, out_spectra, drift)
