"""Result objects of a checkpoint comparison, their text summary and their JSON form.

Two families of numbers, never mixed (the definitions are in ``weightscope.analyses.compare``'s module doc):

* energy SHARES (threshold-free, exact): ``in_basis_share`` = the part of ||W_t - W_b||_F^2 on the base's own
  rank-one components (rescaling them, zero and negative factors included), ``off_basis_share`` = the rest
  (directions turning, by a little or a lot, and new directions). They add up to 1.
* direction COUNTS (thresholded): ``counts()`` = how many base directions are ``stable`` / ``reweighted``
  (ratio off 1 by more than ``ratio_tol``, or flipped) / ``rotated`` (matched angle above
  ``max_angle`` degrees, i.e. match cosine below ``cos_threshold``).

Small turns of every direction give a large off-basis share and no rotated direction; the report says so.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ...core.errors import WeightscopeError
from ...core.fileio import dump_json, parse_json

KINDS = ("stable", "reweighted", "rotated")
#: the matrices a comparison's settings["kind"] names
MATRICES = {"vo": "value-output", "qk": "query-key", "mlp": "MLP write (one unit per layer, as head 0)"}
FORMAT = "weightscope-compare/2"
EPSILONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # intruder thresholds swept by default


@dataclass
class DirectionChange:
    """One base singular direction and its tuned partner.

    index / tuned_index: rows of the base / tuned HeadSVD (inside a tie group: the canonical mix of the group's rows);
    s_base (b_i) / s_tuned: singular values of the pair; ratio: signed s_tuned / s_base (negative: flipped; inf: the
    base direction was below the noise floor and the tuned one is not); cos: signed match cosine (u.u')(v.v') (1 by
    convention for a direction rescaled to below the noise floor: nothing of it went elsewhere); cos_read,
    cos_write: |u.u'| and |v.v'|; gain: a_i / b_i, W_t's coefficient on the base component over the base's;
    energy: (a_i - b_i)^2, this direction's in-basis change energy; kind: stable / reweighted / rotated; group: the
    base tie group it belongs to; base_concepts / tuned_concepts: [concept, coefficient] pairs (write side), when
    labelled.
    """

    index: int
    tuned_index: int
    s_base: float
    s_tuned: float
    ratio: float
    cos: float
    cos_read: float
    cos_write: float
    gain: float
    energy: float
    kind: str
    group: list[int] | None = None
    base_concepts: list = field(default_factory=list)
    tuned_concepts: list = field(default_factory=list)

    @property
    def angle(self) -> float:
        """Matched angle in degrees, arccos |cos| (0: kept exactly, 90: nothing in common)."""
        return math.degrees(math.acos(min(1.0, abs(self.cos))))


@dataclass
class HeadChange:
    """How one head changed. Energies are squared Frobenius norms.

    norm_base / norm_tuned: ||W_b||_F, ||W_t||_F; energy_total: ||W_t - W_b||_F^2 = energy_in_basis +
    energy_off_basis; noise: expected ||W_t - W_b||_F from storage rounding alone (0 for exact checkpoints);
    tolerance: the ||W_t - W_b||_F at or below which the head counts as unchanged (max of change_tol * norm_base
    and noise_factor * noise); angle_read / angle_write: largest principal angle (degrees) between the base and
    tuned read / write spans (all r directions); top_angles_write: principal angles (degrees, ascending) between
    the base and tuned top-k write subspaces; intruder_cos: for each tuned direction above the noise floor (tuned
    order), its best |cos| with any base write direction (an intruder at epsilon when below it);
    directions: one DirectionChange per base direction, base order.
    """

    layer: int
    head: int
    norm_base: float
    norm_tuned: float
    energy_total: float
    energy_in_basis: float
    energy_off_basis: float
    noise: float
    tolerance: float
    angle_read: float
    angle_write: float
    changed: bool
    top_angles_write: list[float] = field(default_factory=list)
    intruder_cos: list[float] = field(default_factory=list)
    directions: list[DirectionChange] = field(default_factory=list)

    @property
    def rel_change(self) -> float:
        """||W_t - W_b||_F / ||W_b||_F (inf for a head that comes alive from zero)."""
        if self.norm_base > 0:
            return math.sqrt(self.energy_total) / self.norm_base
        return math.inf if self.energy_total > 0 else 0.0

    @property
    def in_basis_share(self) -> float:
        """Share of the change energy on the base's own components (0 when unchanged)."""
        return _share(self.energy_in_basis, self.energy_total) if self.changed else 0.0

    @property
    def off_basis_share(self) -> float:
        return _share(self.energy_off_basis, self.energy_total) if self.changed else 0.0

    def intruders(self, epsilon: float) -> int:
        """Tuned directions whose best |cos| with every base write direction is below epsilon (0 if unchanged)."""
        return sum(c < epsilon for c in self.intruder_cos) if self.changed else 0

    def of_kind(self, kind: str) -> list[DirectionChange]:
        _check_kind(kind)
        return [d for d in self.directions if d.kind == kind]


def _check_kind(kind: str | None) -> None:
    if kind is not None and kind not in KINDS:
        raise WeightscopeError(f"unknown direction kind {kind!r}: expected one of {', '.join(KINDS)}")


def _share(part: float, total: float) -> float:
    return part / total if total > 0 else 0.0


@dataclass
class Comparison:
    """Head-by-head comparison of a base and a tuned checkpoint. Index with ``result[layer, head]``.

    base / tuned: identities of the two checkpoints; settings: thresholds, noise floor and decomposition options;
    heads: {(layer, head): HeadChange}; labelled: whether concept labels were attached.
    """

    base: str
    tuned: str
    settings: dict
    heads: dict[tuple[int, int], HeadChange] = field(default_factory=dict)
    labelled: bool = False

    def __getitem__(self, key: tuple[int, int]) -> HeadChange:
        if key not in self.heads:
            raise WeightscopeError(f"layer {key[0]} head {key[1]} was not compared; compared: {sorted(self.heads)[:6]} ...")
        return self.heads[key]

    # ---- accessors
    @property
    def layers(self) -> list[int]:
        return sorted({l for l, _ in self.heads})

    def _sum(self, name: str) -> float:
        return sum(getattr(h, name) for h in self.heads.values() if h.changed)

    @property
    def energy_total(self) -> float:
        return self._sum("energy_total")

    @property
    def energy_in_basis(self) -> float:
        return self._sum("energy_in_basis")

    @property
    def energy_off_basis(self) -> float:
        return self._sum("energy_off_basis")

    @property
    def in_basis_share(self) -> float:
        """Whole-model share of the change energy on the base's own components (energy-weighted over heads)."""
        return _share(self.energy_in_basis, self.energy_total)

    @property
    def off_basis_share(self) -> float:
        return _share(self.energy_off_basis, self.energy_total)

    @property
    def chance_in_basis_share(self) -> float:
        """In-basis share a random change of the head factors would have: 1 / (2 D - r).

        A small change of A (D, r) and B (r, D) moves W = A B inside the (2 D r - r^2)-dimensional tangent space of
        rank-r matrices; the r base components u_i v_i^T span r of those dimensions.
        """
        D, r = self.settings.get("width"), self.settings.get("rank")
        return 1.0 / (2 * D - r) if D and r else 0.0

    @property
    def mean_match_cos(self) -> float:
        """Mean |match cosine| over the directions of changed heads, weighted by s_base^2 (1: basis kept exactly)."""
        num = den = 0.0
        for hc in self.heads.values():
            if hc.changed:
                for d in hc.directions:
                    num += d.s_base ** 2 * abs(d.cos)
                    den += d.s_base ** 2
        return num / den if den > 0 else 1.0

    @property
    def rel_change(self) -> float:
        """sqrt(sum of change energies of changed heads) / sqrt(sum of base energies) over all compared heads."""
        base = sum(h.norm_base ** 2 for h in self.heads.values())
        return math.sqrt(self.energy_total / base) if base > 0 else (math.inf if self.energy_total > 0 else 0.0)

    def changed_heads(self) -> list[HeadChange]:
        """Heads above their tolerance, most changed (relative change) first; ties by (layer, head)."""
        return sorted((h for h in self.heads.values() if h.changed), key=lambda h: (-h.rel_change, h.layer, h.head))

    def top_heads(self, n: int = 5) -> list[HeadChange]:
        return self.changed_heads()[:n]

    def directions(self, kind: str | None = None) -> list[tuple[int, int, DirectionChange]]:
        """(layer, head, DirectionChange) of every compared direction (of one kind if given), in head order."""
        _check_kind(kind)
        return [(l, h, d) for (l, h), hc in sorted(self.heads.items()) for d in hc.directions
                if kind is None or d.kind == kind]

    def counts(self) -> dict[str, int]:
        """Number of base directions of each kind (a COUNT, see the module doc)."""
        out = {k: 0 for k in KINDS}
        for _, _, d in self.directions():
            out[d.kind] += 1
        return out

    def intruder_counts(self, epsilons=EPSILONS) -> dict[float, int]:
        """{epsilon: number of intruder directions over all changed heads} (Shuttleworth et al. 2024, sec. 4)."""
        return {float(e): sum(h.intruders(e) for h in self.heads.values()) for e in epsilons}

    def sigma_ratios(self) -> np.ndarray:
        """log2 |s_tuned / s_base| of the matched (not rotated, finite, non-zero) directions of changed heads."""
        return np.array([math.log2(abs(d.ratio)) for hc in self.heads.values() if hc.changed for d in hc.directions
                         if d.kind != "rotated" and d.ratio != 0 and math.isfinite(d.ratio)])

    def layer_summary(self, epsilon: float = 0.5) -> list[dict]:
        """Per layer: energies, shares, direction counts, intruders at ``epsilon`` and mean relative change."""
        rows = []
        for layer in self.layers:
            hs = [h for (l, _), h in sorted(self.heads.items()) if l == layer]
            tot = sum(h.energy_total for h in hs if h.changed)
            inb = sum(h.energy_in_basis for h in hs if h.changed)
            rows.append({
                "layer": layer, "heads": len(hs), "changed_heads": sum(h.changed for h in hs),
                "energy_total": tot, "energy_in_basis": inb, "energy_off_basis": tot - inb,
                "in_basis_share": _share(inb, tot), "off_basis_share": _share(tot - inb, tot),
                "mean_rel_change": float(np.mean([min(h.rel_change, 1e300) for h in hs])),
                "rotated": sum(len(h.of_kind("rotated")) for h in hs),
                "reweighted": sum(len(h.of_kind("reweighted")) for h in hs),
                f"intruders@{epsilon:g}": sum(h.intruders(epsilon) for h in hs),
            })
        return rows

    # ---- concept labels (see labels.label_comparison)
    def concept_scores(self) -> dict[str, float]:
        """Concept -> amplification score, summed over the matched (not rotated) labelled directions of changed heads.

        Each direction contributes coefficient x log2 |ratio| x (s_base / ||s_base|| of its head) to each concept
        of its base explanation (or of its tuned partner's when the base is unlabelled). Positive: written more
        strongly after tuning. Ratios within ``ratio_tol`` of +-1 add nothing (a pure sign flip writes the
        opposite, not more or less); a direction rescaled to zero counts as 1/1024 (log2 = -10).
        """
        scores: dict[str, float] = defaultdict(float)
        tol = self.settings.get("ratio_tol", 0.0)
        for hc in self.heads.values():
            if not hc.changed:
                continue
            norm = math.sqrt(sum(d.s_base ** 2 for d in hc.directions)) or 1.0
            for d in hc.directions:
                if (d.kind == "rotated" or not math.isfinite(d.ratio) or abs(abs(d.ratio) - 1) <= tol
                        or not (d.base_concepts or d.tuned_concepts)):
                    continue
                weight = math.log2(max(abs(d.ratio), 2.0 ** -10)) * d.s_base / norm
                for concept, coef in (d.base_concepts or d.tuned_concepts):
                    scores[concept] += coef * weight
        return dict(scores)

    def amplified_concepts(self, n: int = 10) -> list[tuple[str, float]]:
        """The n concepts with the largest positive score (needs labels); ties by name."""
        items = sorted(self.concept_scores().items(), key=lambda kv: (-kv[1], kv[0]))
        return [(c, s) for c, s in items if s > 0][:n]

    def suppressed_concepts(self, n: int = 10) -> list[tuple[str, float]]:
        items = sorted(self.concept_scores().items(), key=lambda kv: (kv[1], kv[0]))
        return [(c, s) for c, s in items if s < 0][:n]

    def rotated_concepts(self, n: int = 10) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
        """(lost, gained): concepts of rotated base directions and of their tuned partners, weighted by
        coefficient x singular value / head norm, strongest first."""
        lost: dict[str, float] = defaultdict(float)
        gained: dict[str, float] = defaultdict(float)
        for hc in self.heads.values():
            norm_b = math.sqrt(sum(d.s_base ** 2 for d in hc.directions)) or 1.0
            for d in hc.of_kind("rotated"):
                for c, w in d.base_concepts:
                    lost[c] += w * d.s_base / norm_b
                for c, w in d.tuned_concepts:
                    gained[c] += w * d.s_tuned / norm_b
        top = lambda dd: sorted(dd.items(), key=lambda kv: (-kv[1], kv[0]))[:n]  # noqa: E731
        return top(lost), top(gained)

    # ---- text
    def summary(self, n_heads: int = 5, n_concepts: int = 6) -> str:
        c, s = self.counts(), self.settings
        eps = s.get("epsilon", 0.5)
        lines = [
            f"{self.base} -> {self.tuned} ({MATRICES.get(s.get('kind', 'vo'), s.get('kind'))} matrices): "
            f"{len(self.heads)} heads compared, {len(self.changed_heads())} changed "
            f"(||dW|| above max(change_tol {s['change_tol']:g} x ||W||, noise floor: {s.get('noise_factor', 0):g} x "
            f"rounding of {s.get('precision_base', '?')} / {s.get('precision_tuned', '?')}))",
            f"  relative change of the attention heads: {self.rel_change:.4f}",
            f"  change energy (shares of ||dW||_F^2, no threshold): in-basis {100 * self.in_basis_share:.1f}% "
            f"(rescaling the base's own directions), off-basis {100 * self.off_basis_share:.1f}% (turning, new "
            f"directions); a random change: {100 * self.chance_in_basis_share:.2f}% in-basis",
            f"  direction counts (of {sum(c.values())}): {c['reweighted']} reweighted (|ratio - 1| > {s['ratio_tol']:g} "
            f"or flipped), {c['rotated']} rotated (matched angle > {s.get('max_angle', 0):.1f} deg, match cos < "
            f"{s['cos_threshold']:g}), {c['stable']} stable; mean match cosine {self.mean_match_cos:.3f}",
            f"  intruder directions (best |cos| with every base write direction < eps={eps:g}): "
            f"{self.intruder_counts([eps])[float(eps)]}",
        ]
        if self.heads:
            lines.append("  per layer:   layer  changed  rel.change  in-basis  off-basis  rotated  intruders")
            for row in self.layer_summary(eps):
                lines.append(f"               {row['layer']:>5}  {row['changed_heads']:>3}/{row['heads']:<3}  "
                             f"{row['mean_rel_change']:>10.4f}  {100 * row['in_basis_share']:>7.1f}%  "
                             f"{100 * row['off_basis_share']:>8.1f}%  {row['rotated']:>7}  {row[f'intruders@{eps:g}']:>9}")
        top = self.top_heads(n_heads)
        if top:
            lines.append("  most changed heads:")
            for hc in top:
                rot = ", ".join(f"{d.index} ({d.angle:.0f} deg)" for d in hc.of_kind("rotated")[:4]) or "-"
                rew = ", ".join(f"{d.index} x{d.ratio:.2f}" for d in
                                sorted(hc.of_kind("reweighted"), key=lambda d: -abs(math.log(abs(d.ratio) or 1e-12)))[:4]) or "-"
                lines.append(f"    L{hc.layer} H{hc.head}: rel.change {hc.rel_change:.4f}, in-basis "
                             f"{100 * hc.in_basis_share:.0f}%; rotated [{rot}]; reweighted [{rew}]")
        if self.labelled:
            fmt = lambda items: ", ".join(f"{c} ({v:+.3f})" for c, v in items) or "-"  # noqa: E731
            lines.append(f"  amplified concepts:  {fmt(self.amplified_concepts(n_concepts))}")
            lines.append(f"  suppressed concepts: {fmt(self.suppressed_concepts(n_concepts))}")
            lost, gained = self.rotated_concepts(n_concepts)
            if lost or gained:
                lines.append(f"  rotated away: {fmt(lost)}")
                lines.append(f"  rotated in:   {fmt(gained)}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    # ---- serialisation
    def totals(self) -> dict:
        """One flat row of whole-model numbers (the harness's summary table)."""
        eps = self.settings.get("epsilon", 0.5)
        return {"energy_total": self.energy_total, "energy_in_basis": self.energy_in_basis,
                "energy_off_basis": self.energy_off_basis, "in_basis_share": self.in_basis_share,
                "off_basis_share": self.off_basis_share, "chance_in_basis_share": self.chance_in_basis_share,
                "rel_change": self.rel_change, "mean_match_cos": self.mean_match_cos,
                "changed_heads": len(self.changed_heads()), **self.counts(),
                f"intruders@{eps:g}": self.intruder_counts([eps])[float(eps)]}

    def to_dict(self) -> dict:
        return {
            "format": FORMAT, "base": self.base, "tuned": self.tuned, "settings": self.settings,
            "labelled": self.labelled, "totals": self.totals(),
            "layers": self.layer_summary(self.settings.get("epsilon", 0.5)),
            "heads": [asdict(hc) for _, hc in sorted(self.heads.items())],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Comparison":
        if data.get("format") != FORMAT:
            raise WeightscopeError(f"not a weightscope comparison (format {data.get('format')!r}, expected {FORMAT!r})")
        heads = {}
        for rec in data["heads"]:
            rec = dict(rec)
            dirs = [DirectionChange(**d) for d in rec.pop("directions")]
            hc = HeadChange(**rec, directions=dirs)
            heads[hc.layer, hc.head] = hc
        return cls(data["base"], data["tuned"], data["settings"], heads, bool(data.get("labelled", False)))

    def to_json(self, path: str | Path | None = None) -> str:
        return dump_json(self.to_dict(), path)

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> "Comparison":
        """Read one comparison from JSON text or a file (a compare.json with exactly one comparison is accepted)."""
        found = load_comparisons(text_or_path)
        if len(found) != 1:
            raise WeightscopeError(f"the JSON holds {len(found)} comparisons; read them with load_comparisons()")
        return found[0]


def load_comparisons(text_or_path: str | Path) -> list[Comparison]:
    """All comparisons in a compare.json (``{"comparisons": [...]}``) or in one comparison's JSON (text or path)."""
    def build(data):
        return [Comparison.from_dict(r) for r in (data["comparisons"] if "comparisons" in data else [data])]

    return parse_json(text_or_path, "comparison", build)


def comparisons_to_json(comparisons: list[Comparison], path: str | Path | None = None) -> str:
    """The compare.json format: ``{"format": ..., "comparisons": [one dict per tuned checkpoint]}``."""
    return dump_json({"format": FORMAT, "comparisons": [c.to_dict() for c in comparisons]}, path)


def text_table(header: list[str], rows: list[list]) -> str:
    """A plain fixed-width table."""
    cells = [[str(x) for x in header]] + [[str(x) for x in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    fmt = lambda r: "  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(cells[0]), fmt(["-" * w for w in widths])] + [fmt(r) for r in cells[1:]])
