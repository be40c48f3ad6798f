"""The result of a similarity run: layer x layer matrices per measure and model pair, probe qualities, summaries."""
from __future__ import annotations

import csv
import io
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...core.errors import WeightscopeError
from ...core.fileio import dump_json, parse_json
from .measures import depth_alignment, model_similarity, off_diagonal_rank_correlation

DATA_BASED = ("concept", "cka")
DATA_FREE = ("profile", "subspace")
DESCRIPTIONS = {
    "concept": "concept vectors: correlation of their responses on held-out inputs, mean over concepts",
    "cka": "linear CKA of the layers' features on held-out inputs (baseline)",
    "profile": "data-free: cosine of the layers' concept profiles (sigma-weighted explanation coefficients)",
    "subspace": "data-free: mean cos^2 of principal angles between the layers' joint-space write subspaces",
}


def describe_measure(measure: str) -> str:
    if measure.startswith("concept:"):
        return f"concept vector of {measure.split(':', 1)[1]!r}: correlation of responses on held-out inputs"
    return DESCRIPTIONS.get(measure, measure)


@dataclass
class Similarity:
    """Layer similarity of one or more models.

    models: {model name: layer names in depth order}; matrices: {(measure, model_a, model_b): (La, Lb) array},
    stored once per unordered pair (``matrix`` transposes on demand); probes: one record per concept vector
    (model, layer, concept, metric, quality, ap); settings: how it was computed.
    Measures: "concept" (mean over concepts), "concept:<name>" (one concept), "cka", "profile", "subspace".
    """

    models: dict[str, list[str]]
    matrices: dict[tuple[str, str, str], np.ndarray] = field(default_factory=dict)
    probes: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    @property
    def measures(self) -> list[str]:
        seen = dict.fromkeys(m for m, _, _ in self.matrices)
        return sorted(seen, key=lambda m: (m.startswith("concept:"), m))

    @property
    def main_measures(self) -> list[str]:
        return [m for m in self.measures if ":" not in m]

    def matrix(self, measure: str, model_a: str, model_b: str | None = None) -> np.ndarray:
        """(La, Lb) layer matrix of ``measure`` between two models (model_b None: the model with itself)."""
        model_b = model_a if model_b is None else model_b
        if (measure, model_a, model_b) in self.matrices:
            return self.matrices[measure, model_a, model_b]
        if (measure, model_b, model_a) in self.matrices:
            return self.matrices[measure, model_b, model_a].T
        raise WeightscopeError(f"no {measure!r} matrix for {model_a} vs {model_b}; measures: {', '.join(self.measures)}")

    def pairs(self, measure: str) -> list[tuple[str, str]]:
        return [(a, b) for m, a, b in self.matrices if m == measure]

    def model_matrix(self, measure: str) -> tuple[list[str], np.ndarray]:
        """(model names, N x N) model similarity (``measures.model_similarity``); NaN where a pair was not compared."""
        names = list(self.models)
        M = np.full((len(names), len(names)), np.nan)
        for a, b in self.pairs(measure):
            i, j = names.index(a), names.index(b)
            M[i, j] = M[j, i] = 1.0 if a == b else model_similarity(self.matrix(measure, a, b))
        return names, M

    def depth(self, measure: str) -> dict | None:
        """Relative-depth alignment (``measures.depth_alignment``) over the pairs of different models, or None."""
        mats = [self.matrix(measure, a, b) for a, b in self.pairs(measure) if a != b]
        return depth_alignment(mats) if mats else None

    def rank_correlations(self) -> list[dict]:
        """Spearman correlation of off-diagonal entries between every data-based and data-free measure, per model."""
        out = []
        for model in self.models:
            have = [m for m in self.main_measures if (m, model, model) in self.matrices]
            for m1, m2 in itertools.combinations(have, 2):
                if len(self.models[model]) >= 3:
                    rho = off_diagonal_rank_correlation(self.matrix(m1, model), self.matrix(m2, model))
                    out.append({"model": model, "measure_a": m1, "measure_b": m2, "spearman": rho})
        return out

    def probe_quality(self) -> dict[str, dict]:
        """Per concept: the best layer's held-out quality over all models ({concept: {"metric", "best", "model",
        "layer", "mean"}})."""
        out: dict[str, dict] = {}
        for rec in self.probes:
            cur = out.setdefault(rec["concept"], {"metric": rec["metric"], "best": -1.0, "values": []})
            cur["values"].append(rec["quality"])
            if rec["quality"] > cur["best"]:
                cur.update(best=rec["quality"], model=rec["model"], layer=rec["layer"])
        for cur in out.values():
            cur["mean"] = float(np.mean(cur.pop("values")))
        return out

    def summary(self) -> dict:
        return {
            "depth_alignment": {m: self.depth(m) for m in self.main_measures if self.depth(m) is not None},
            "model_similarity": {m: self.model_matrix(m)[1].tolist() for m in self.main_measures},
            "rank_correlations": self.rank_correlations(),
            "probe_quality": self.probe_quality(),
        }

    def summary_text(self) -> str:
        lines = [f"{len(self.models)} model(s): " + ", ".join(f"{m} ({len(l)} layers)" for m, l in self.models.items())]
        s = self.summary()
        for m in self.main_measures:
            lines.append(f"{m}: {describe_measure(m)}")
            for a, b in self.pairs(m):
                S = self.matrix(m, a, b)
                what = f"  {a} with itself: mean off-diagonal {_offdiag_mean(S):.3f}" if a == b else \
                    f"  {a} vs {b}: model similarity {model_similarity(S):.3f}"
                lines.append(what)
            d = s["depth_alignment"].get(m)
            if d:
                lines.append(f"  relative depth of best-matching layers: Spearman {d['spearman']:.3f}, "
                             f"mean |difference| {d['mean_abs_diff']:.3f} over {d['n_points']} layers")
        for r in s["rank_correlations"]:
            lines.append(f"rank correlation {r['measure_a']} vs {r['measure_b']} ({r['model']}): {r['spearman']:.3f}")
        for concept, q in s["probe_quality"].items():
            lines.append(f"probe {concept}: best {q['metric']} {q['best']:.3f} ({q['model']} {q['layer']}), "
                         f"mean over layers {q['mean']:.3f}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ files

    def to_dict(self) -> dict:
        return {"models": self.models, "settings": self.settings, "probes": self.probes,
                "matrices": [{"measure": m, "model_a": a, "model_b": b, "values": v.tolist()}
                             for (m, a, b), v in self.matrices.items()],
                "summary": self.summary()}

    @classmethod
    def from_dict(cls, data: dict) -> "Similarity":
        mats = {(e["measure"], e["model_a"], e["model_b"]): np.asarray(e["values"], dtype=np.float64)
                for e in data["matrices"]}
        return cls(data["models"], mats, data["probes"], data["settings"])

    def to_json(self, path: str | Path | None = None) -> str:
        return dump_json(self.to_dict(), path)

    @classmethod
    def from_json(cls, text_or_path) -> "Similarity":
        return parse_json(text_or_path, "similarity", cls.from_dict)

    def csv_tables(self) -> dict[str, str]:
        """{file name: CSV text}: one long table of every matrix entry, and one of the probe qualities."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["measure", "model_a", "layer_a", "model_b", "layer_b", "value"])
        for (m, a, b), S in self.matrices.items():
            for i, la in enumerate(self.models[a]):
                for j, lb in enumerate(self.models[b]):
                    w.writerow([m, a, la, b, lb, f"{S[i, j]:.6g}"])
        out = {"similarity_matrices.csv": buf.getvalue()}
        if self.probes:
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(["model", "layer", "concept", "metric", "quality", "ap"])
            for r in self.probes:
                w.writerow([r["model"], r["layer"], r["concept"], r["metric"], r["quality"], r["ap"]])
            out["probe_quality.csv"] = buf.getvalue()
        return out


def _offdiag_mean(S: np.ndarray) -> float:
    mask = ~np.eye(len(S), dtype=bool)
    return float(S[mask].mean()) if mask.any() else float("nan")


def merge(*results: Similarity) -> Similarity:
    """One result from several runs on the same models (e.g. data-based and data-free), matrices side by side."""
    models: dict[str, list[str]] = {}
    out = Similarity(models)
    for r in results:
        for name, layers in r.models.items():
            if name in models and models[name] != layers:
                raise WeightscopeError(f"model {name} has different layers in the results being merged")
            models[name] = layers
        out.matrices.update(r.matrices)
        out.probes.extend(r.probes)
        out.settings.update(r.settings)
    return out
