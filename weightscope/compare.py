"""Fine-tuned checkpoint comparison (METHODS.md section 7): does fine-tuning reweight or rotate each head's basis?

Two checkpoints of one architecture are decomposed head by head (``decompose_model``) and each head's
value-output matrix W_b (base) is compared with W_t (tuned). Row-vector convention as in ``decompose``:
``W = read.T @ diag(s) @ write``, with read/write rows u_i, v_i.

Matching. For base direction i and tuned direction j the signed overlap of their rank-one components is
``C_ij = <u_i v_i^T, u'_j v'_j^T>_F = (u_i . u'_j) (v_i . v'_j)`` -- the product of the read and write cosines,
so a direction only counts as kept when both what it reads and what it writes are kept. The Hungarian
assignment (``scipy.optimize.linear_sum_assignment``) on |C| pairs every base direction with one tuned
direction; |C| of the pair is its *match cosine*, sign(C) < 0 means the pair flipped (alpha < 0 in METHODS 6).

Tie groups. Directions with (near-)equal singular values only define a subspace, so the vectors inside a group
are put in a canonical basis before matching. What counts as "near" depends on the size of the change: by
perturbation theory (Davis-Kahan; for a 2 x 2 block, tan 2theta = 2 e / gap for a coupling e) a change of spectral
norm ||W_t - W_b||_2 can mix two directions whose singular values differ by a small fraction of it by any angle,
without changing the operator on their span much. So a head's tie groups are the decomposition's own
``HeadSVD.groups`` joined with runs of neighbours (base, and separately tuned) whose gap is at most
``tie_factor * ||W_t - W_b||_2`` (default 0.25: a gap a quarter of the change lets a typical coupling mix the pair
past the 0.8 match threshold). On the shipped shapes-world pair every direction the plain matching called rotated
was such a pair (gap 2-12% of ||dW||_2, both vectors kept > 0.99 inside the pair's span). Canonical bases:
  * base group G: the eigenvectors of sym(X_GG), X_ij = u_i W_t v_j^T -- the axes along which the fine-tuning
    rescaled the group (a tie the tuning broke is matched along the axes it chose);
  * tuned group T: the orthogonal Procrustes rotation that best aligns it with the base directions it overlaps
    most (read and write cosines together).
Both are rotations inside a group, so W_b and W_t and every energy below are unchanged by them.

Share of change (exact, no threshold in the decomposition itself). With the canonical base directions,
a_i = u_i W_t v_i^T is W_t's coefficient on the base component u_i v_i^T and b_i = u_i W_b v_i^T (= s_i outside
groups). The components u_i v_i^T are orthonormal in the Frobenius inner product, so

    ||W_t - W_b||_F^2 = sum_i (a_i - b_i)^2  +  ||W_t - sum_i a_i u_i v_i^T||_F^2 .

Inside a tie group the canonical basis diagonalises the symmetric part of W_t on the group, so the reweighting
of the group along any axes counts as reweighting (only its span was defined). The *reweighting energy* of a
head is sum_i (a_i - b_i)^2 over the well-matched directions (match cosine >=
``cos_threshold``): the change a pure rescaling of the base's own directions explains. The *rotation energy* is
everything else (the change of poorly matched directions plus the part of W_t outside the base components). The
two add up to ||W_t - W_b||_F^2 exactly; per layer and for the whole model the energies are summed, so the model's
reweighting share is energy-weighted (heads that changed more count more).

Direction kinds: "rotated" (match cosine below ``cos_threshold``), "reweighted" (well matched and the signed
singular-value ratio sigma'_j / sigma_i is off 1 by more than ``ratio_tol``, or flipped), "stable" otherwise. A head
whose relative change ||W_t - W_b|| / ||W_b|| is at most ``change_tol`` is unchanged and all its directions are
stable (float rounding of a re-saved checkpoint must not show up as rotations).

Labels: ``label_comparison`` attaches the concept explanations of both models (``inspect_model`` results, write
side) to every direction; concepts of reweighted directions are scored by log2 |ratio| weighted by the direction's
share of its head (``amplified_concepts`` / ``suppressed_concepts``). Direction indices must refer to the same
decomposition as the inspections (``inspect_model`` uses ``decompose_model`` defaults: fold_ln=False,
center_write=False; so do the defaults here).
"""
from __future__ import annotations

import gc
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from .decompose import HeadSVD, decompose_model
from .errors import WeightscopeError
from .fileio import dump_json, parse_json
from .linalg import angles_from_cosines, factored_singular_values, linked_runs, nearest_orthogonal
from .weights import VisionWeights

KINDS = ("stable", "reweighted", "rotated")
RATIO_NOISE = 1e-3  # singular-value ratios this close to 1 are rounding (fp16 checkpoints), not a change
FORMAT = "weightscope-compare/1"


# --------------------------------------------------------------------------------------------------- results


@dataclass
class DirectionChange:
    """One base singular direction and its tuned partner.

    index / tuned_index: rows of the base / tuned HeadSVD (inside a degenerate group: the canonical mix of the
    group's rows, see the module doc); s_base (b_i) / s_tuned: singular values of the pair; ratio: signed
    s_tuned / s_base (negative when the pair flipped); cos: signed match cosine (u.u')(v.v'); cos_read, cos_write:
    |u.u'| and |v.v'|; gain: a_i / b_i, W_t's coefficient on the base component over the base's; energy:
    (a_i - b_i)^2, this direction's share of ||W_t - W_b||_F^2 along its own component; kind: stable / reweighted /
    rotated; group: the base tie group it belongs to (see the module doc); base_concepts / tuned_concepts: [concept,
    coefficient] pairs of the base direction and of its tuned partner (write side, sign +1), when labelled.
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


@dataclass
class HeadChange:
    """How one head changed. Energies are squared Frobenius norms (see the module doc).

    norm_base / norm_tuned: ||W_b||_F, ||W_t||_F; energy_total: ||W_t - W_b||_F^2 = energy_reweight +
    energy_rotation; angle_read / angle_write: largest principal angle (degrees) between the base and tuned
    read / write subspaces (all r directions); directions: one DirectionChange per base direction, base order.
    """

    layer: int
    head: int
    norm_base: float
    norm_tuned: float
    energy_total: float
    energy_reweight: float
    energy_rotation: float
    angle_read: float
    angle_write: float
    changed: bool
    directions: list[DirectionChange] = field(default_factory=list)

    @property
    def rel_change(self) -> float:
        """||W_t - W_b||_F / ||W_b||_F."""
        return math.sqrt(self.energy_total) / self.norm_base if self.norm_base > 0 else 0.0

    @property
    def reweight_share(self) -> float:
        """Fraction of the head's change energy explained by rescaling matched directions (0 when unchanged)."""
        return self.energy_reweight / self.energy_total if self.changed and self.energy_total > 0 else 0.0

    @property
    def rotation_share(self) -> float:
        return self.energy_rotation / self.energy_total if self.changed and self.energy_total > 0 else 0.0

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

    base / tuned: identities of the two checkpoints; settings: thresholds and decomposition options used;
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

    @property
    def energy_total(self) -> float:
        return sum(h.energy_total for h in self.heads.values() if h.changed)

    @property
    def energy_reweight(self) -> float:
        return sum(h.energy_reweight for h in self.heads.values() if h.changed)

    @property
    def energy_rotation(self) -> float:
        return sum(h.energy_rotation for h in self.heads.values() if h.changed)

    @property
    def reweight_share(self) -> float:
        """Whole-model share of the change energy explained by reweighting matched directions."""
        return _share(self.energy_reweight, self.energy_total)

    @property
    def rotation_share(self) -> float:
        return _share(self.energy_rotation, self.energy_total)

    @property
    def chance_reweight_share(self) -> float:
        """Reweighting share a random change of the head factors would have: 1 / (2 D - r).

        A small change of A (D, r) and B (r, D) moves W = A B inside the (2 D r - r^2)-dimensional tangent space of
        rank-r matrices; the r base components u_i v_i^T span r of those dimensions, so an isotropic random change
        puts r / (2 D r - r^2) of its energy on them. Compare ``reweight_share`` with it.
        """
        D, r = self.settings.get("width"), self.settings.get("rank")
        return 1.0 / (2 * D - r) if D and r else 0.0

    @property
    def mean_match_cos(self) -> float:
        """Mean match cosine |(u.u')(v.v')| over the directions of changed heads, weighted by s_base^2: how stable the
        basis is (1: every direction kept exactly)."""
        num = den = 0.0
        for hc in self.heads.values():
            if hc.changed:
                for d in hc.directions:
                    num += d.s_base ** 2 * abs(d.cos)
                    den += d.s_base ** 2
        return num / den if den > 0 else 1.0

    @property
    def rel_change(self) -> float:
        """sqrt(sum of change energies) / sqrt(sum of base energies) over all compared heads."""
        base = sum(h.norm_base ** 2 for h in self.heads.values())
        return math.sqrt(self.energy_total / base) if base > 0 else 0.0

    def changed_heads(self) -> list[HeadChange]:
        """Heads above ``change_tol``, most changed (relative change) first; ties by (layer, head)."""
        return sorted((h for h in self.heads.values() if h.changed), key=lambda h: (-h.rel_change, h.layer, h.head))

    def top_heads(self, n: int = 5) -> list[HeadChange]:
        return self.changed_heads()[:n]

    def directions(self, kind: str | None = None) -> list[tuple[int, int, DirectionChange]]:
        """(layer, head, DirectionChange) of every compared direction (of one kind if given), in head order."""
        _check_kind(kind)
        return [(l, h, d) for (l, h), hc in sorted(self.heads.items()) for d in hc.directions
                if kind is None or d.kind == kind]

    def counts(self) -> dict[str, int]:
        """Number of directions of each kind."""
        out = {k: 0 for k in KINDS}
        for _, _, d in self.directions():
            out[d.kind] += 1
        return out

    def layer_summary(self) -> list[dict]:
        """Per layer: energies, shares, direction counts and mean relative change of its heads."""
        rows = []
        for layer in self.layers:
            hs = [h for (l, _), h in sorted(self.heads.items()) if l == layer]
            tot = sum(h.energy_total for h in hs if h.changed)
            rew = sum(h.energy_reweight for h in hs if h.changed)
            rows.append({
                "layer": layer, "heads": len(hs), "changed_heads": sum(h.changed for h in hs),
                "energy_total": tot, "energy_reweight": rew, "energy_rotation": tot - rew,
                "reweight_share": _share(rew, tot), "rotation_share": _share(tot - rew, tot),
                "mean_rel_change": float(np.mean([h.rel_change for h in hs])),
                "rotated": sum(len(h.of_kind("rotated")) for h in hs),
                "reweighted": sum(len(h.of_kind("reweighted")) for h in hs),
            })
        return rows

    def concept_scores(self) -> dict[str, float]:
        """Concept -> amplification score, summed over the matched (not rotated) labelled directions of changed heads.

        Each such direction contributes coefficient x log2 |ratio| x (s_base / ||s_base|| of its head) to each
        concept of its base explanation (or of its tuned partner's when the base is unlabelled): a continuous
        measure, so the many small singular-value changes of a gentle fine-tune add up. Positive: the model writes
        the concept more strongly after tuning; negative: less. Ratios within RATIO_NOISE of +-1 add nothing
        (rounding of re-saved weights; a pure sign flip writes the opposite, not more or less).
        """
        scores: dict[str, float] = defaultdict(float)
        for (l, h), hc in self.heads.items():
            if not hc.changed:
                continue
            norm = math.sqrt(sum(d.s_base ** 2 for d in hc.directions)) or 1.0
            for d in hc.directions:
                if (d.kind == "rotated" or d.ratio == 0 or abs(abs(d.ratio) - 1) <= RATIO_NOISE
                        or not (d.base_concepts or d.tuned_concepts)):
                    continue
                weight = math.log2(abs(d.ratio)) * d.s_base / norm
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
        c = self.counts()
        n_dirs = sum(c.values())
        lines = [
            f"{self.base} -> {self.tuned}: {len(self.heads)} heads compared, {len(self.changed_heads())} changed "
            f"(relative change above {self.settings['change_tol']:g})",
            f"  relative change of the attention heads: {self.rel_change:.4f}",
            f"  change energy: reweighting {100 * self.reweight_share:.1f}%, rotation {100 * self.rotation_share:.1f}%"
            f"  (a random change of the factors: {100 * self.chance_reweight_share:.2f}% reweighting)",
            f"  directions: {c['stable']} stable, {c['reweighted']} reweighted, {c['rotated']} rotated of {n_dirs} "
            f"(match cosine threshold {self.settings['cos_threshold']:g}, ratio tolerance {self.settings['ratio_tol']:g}); "
            f"mean match cosine {self.mean_match_cos:.3f}",
        ]
        if self.heads:
            lines.append("  per layer:   layer  changed  rel.change  reweight  rotation  rotated dirs")
            for row in self.layer_summary():
                lines.append(f"               {row['layer']:>5}  {row['changed_heads']:>3}/{row['heads']:<3}  "
                             f"{row['mean_rel_change']:>10.4f}  {100 * row['reweight_share']:>7.1f}%  "
                             f"{100 * row['rotation_share']:>7.1f}%  {row['rotated']:>5}")
        top = self.top_heads(n_heads)
        if top:
            lines.append("  most changed heads:")
            for hc in top:
                rot = ", ".join(str(d.index) for d in hc.of_kind("rotated")[:6]) or "-"
                rew = ", ".join(f"{d.index} x{d.ratio:.2f}" for d in
                                sorted(hc.of_kind("reweighted"), key=lambda d: -abs(math.log(abs(d.ratio) or 1e-12)))[:4]) or "-"
                lines.append(f"    L{hc.layer} H{hc.head}: rel.change {hc.rel_change:.4f}, reweighting "
                             f"{100 * hc.reweight_share:.0f}%; rotated [{rot}]; reweighted [{rew}]")
        if self.labelled:
            fmt = lambda items: ", ".join(f"{c} ({s:+.3f})" for c, s in items) or "-"  # noqa: E731
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
    def to_dict(self) -> dict:
        return {
            "format": FORMAT, "base": self.base, "tuned": self.tuned, "settings": self.settings,
            "labelled": self.labelled,
            "totals": {"energy_total": self.energy_total, "energy_reweight": self.energy_reweight,
                       "energy_rotation": self.energy_rotation, "reweight_share": self.reweight_share,
                       "rotation_share": self.rotation_share, "chance_reweight_share": self.chance_reweight_share,
                       "rel_change": self.rel_change, "mean_match_cos": self.mean_match_cos, **self.counts()},
            "layers": self.layer_summary(),
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


# --------------------------------------------------------------------------------------------------- core


def check_same_architecture(base: VisionWeights, tuned: VisionWeights) -> None:
    """Raise a WeightscopeError naming the first structural difference between two vision towers."""
    checks = [
        ("model family", base.family, tuned.family),
        ("layer count", base.n_layers, tuned.n_layers),
        ("width", base.width, tuned.width),
        ("heads per layer", base.n_heads, tuned.n_heads),
        ("head width", base.layers[0].attn.head_width if base.layers else 0,
         tuned.layers[0].attn.head_width if tuned.layers else 0),
        ("embedding width", base.embed_dim, tuned.embed_dim),
    ]
    for what, a, b in checks:
        if a != b:
            raise WeightscopeError(f"checkpoints have different architectures: {what} {a} vs {b} "
                                   "(base vs tuned); compare checkpoints of the same model")


def _eigenbasis_near_identity(S: np.ndarray) -> np.ndarray:
    """Orthonormal eigenvectors of a symmetric k x k matrix as columns, ordered and signed to stay closest to the
    current basis: column k is the eigenvector assigned (Hungarian on |E|) to basis vector k, with E[k, k] >= 0.

    So a group whose basis already diagonalises S keeps its indices, and ties broken by the tuning keep as much of
    each direction's identity as the new axes allow.
    """
    _, E = np.linalg.eigh(S)
    rows, cols = linear_sum_assignment(-np.abs(E))   # rows are 0..k-1 in order
    E = E[:, cols]
    signs = np.sign(np.diag(E))
    signs[signs == 0] = 1.0
    return E * signs


def _delta_norms(base: HeadSVD, tuned: HeadSVD) -> tuple[float, float]:
    """(||W_t - W_b||_F^2, ||W_t - W_b||_2) from the two SVDs, without a D x D matrix.

    With P = [U_b; U_t], Q = [V_b; V_t] (2r, D) and c = [-s_b, s_t], W_t - W_b = P^T diag(c) Q. QR of P^T and Q^T
    leaves the 2r x 2r core Rp diag(c) Rq^T with the same singular values. Taking the difference inside the core
    keeps it exact to rounding of the change itself (expanding ||W_t||^2 + ||W_b||^2 - 2 <W_t, W_b> would lose a
    small change to rounding of the large terms).
    """
    # W_t - W_b = [U_b, U_t] diag(-s_b, s_t) [V_b; V_t]: a rank-2r product measured from its factors
    sv = factored_singular_values(np.vstack([base.read, tuned.read]).T,
                                  np.concatenate([-base.s, tuned.s])[:, None] * np.vstack([base.write, tuned.write]))
    return float(np.sum(sv ** 2)), float(sv[0]) if sv.size else 0.0


def _tie_groups(s: np.ndarray, groups: list[list[int]], tie: float) -> list[list[int]]:
    """Index groups of s (descending) in which neighbours are linked by a gap <= ``tie`` or by a shared group."""
    linked = np.zeros(max(s.size - 1, 0), dtype=bool)
    if s.size > 1:
        linked |= (s[:-1] - s[1:]) <= tie
    for g in groups:
        for i, j in zip(sorted(g)[:-1], sorted(g)[1:]):
            linked[i:j] = True  # decomposition groups are runs of neighbours
    return linked_runs(linked)


def _largest_angle(C: np.ndarray) -> float:
    """Largest principal angle (degrees) between two orthonormal bases, from their cosine matrix C (r, r)."""
    angles = angles_from_cosines(C)
    return float(np.degrees(angles.max())) if angles.size else 0.0


def compare_heads(
    base: HeadSVD,
    tuned: HeadSVD,
    cos_threshold: float = 0.8,
    ratio_tol: float = 0.05,
    change_tol: float = 1e-4,
    tie_factor: float = 0.25,
) -> HeadChange:
    """Compare one head of two checkpoints (see the module doc for the method).

    base, tuned: HeadSVD of the same (layer, head) with the same rank r and width D. cos_threshold: match cosine
    below which a direction counts as rotated; ratio_tol: |ratio - 1| above which a matched direction counts as
    reweighted; change_tol: relative change at or below which the head counts as unchanged; tie_factor: neighbours
    whose singular values differ by at most tie_factor * ||W_t - W_b||_2 are compared as one subspace (0: only the
    decompositions' own groups).
    """
    if base.read.shape != tuned.read.shape:
        raise WeightscopeError(f"layer {base.layer} head {base.head}: base directions {base.read.shape} vs tuned "
                               f"{tuned.read.shape}; compare heads of the same architecture")
    sb, st = base.s.astype(np.float64), tuned.s.astype(np.float64)
    r = sb.size
    # everything below works on these r x r cosine matrices: rotations inside groups act on their rows / columns
    Cu, Cv = base.read @ tuned.read.T, base.write @ tuned.write.T
    energy_total, change_norm = _delta_norms(base, tuned)
    base_groups = _tie_groups(sb, base.groups, tie_factor * change_norm)
    tuned_groups = _tie_groups(st, tuned.groups, tie_factor * change_norm)
    angle_read, angle_write = _largest_angle(Cu), _largest_angle(Cv)
    X = (Cu * st) @ Cv.T                              # X_ij = u_i W_t v_j^T in base coordinates
    Bdiag = np.diag(sb).astype(np.float64)            # W_b in base coordinates
    group_of: dict[int, list[int]] = {}

    # base groups: rotate to the eigenbasis of the symmetric part of W_t restricted to the group
    for g in base_groups:
        E = _eigenbasis_near_identity(0.5 * (X[np.ix_(g, g)] + X[np.ix_(g, g)].T))
        R = E.T                                       # rows: new basis vectors in group coordinates
        Cu[g], Cv[g] = R @ Cu[g], R @ Cv[g]
        X[g, :] = R @ X[g, :]
        X[:, g] = X[:, g] @ R.T
        Bdiag[np.ix_(g, g)] = R @ Bdiag[np.ix_(g, g)] @ R.T
        for i in g:
            group_of[i] = g

    # tuned groups: Procrustes-align with the base rows they overlap most
    st_eff = st.copy()
    for g in tuned_groups:
        weight = np.linalg.norm(Cu[:, g], axis=1) * np.linalg.norm(Cv[:, g], axis=1)
        near = np.sort(np.argsort(-weight, kind="stable")[: len(g)])
        # new tuned rows Q U_t[g]: Cu_S becomes Cu_S Q^T, and trace((Cu_S + Cv_S) Q^T) is largest for this Q
        Q = nearest_orthogonal(Cu[np.ix_(near, g)] + Cv[np.ix_(near, g)])
        Cu[:, g], Cv[:, g] = Cu[:, g] @ Q.T, Cv[:, g] @ Q.T
        st_eff[g] = np.einsum("ij,j,ij->i", Q, st[g], Q)  # diagonal of Q diag(s_g) Q^T

    C = Cu * Cv
    rows, cols = linear_sum_assignment(-np.abs(C))
    match = np.empty(r, dtype=int)
    match[rows] = cols

    a = np.diag(X).copy()
    b = np.diag(Bdiag).copy()
    norm_base = float(np.sqrt(np.sum(sb ** 2)))
    changed = norm_base > 0 and math.sqrt(energy_total) > change_tol * norm_base
    null = 1e-9 * (sb[0] if r else 0.0)

    directions, energy_reweight = [], 0.0
    for i in range(r):
        j = int(match[i])
        cos = float(C[i, j])
        s_t = float(st_eff[j])
        # a base direction with (numerically) zero weight gets a huge but finite ratio if the tuned one has weight
        ratio = 1.0 if (b[i] <= null and s_t <= null) else math.copysign(s_t / max(b[i], null, 1e-300), cos)
        e = float((a[i] - b[i]) ** 2)
        if not changed or (b[i] <= null and s_t <= null):
            kind = "stable"
        elif abs(cos) < cos_threshold:
            kind = "rotated"
        elif cos < 0 or abs(ratio - 1.0) > ratio_tol:
            kind = "reweighted"
        else:
            kind = "stable"
        if kind != "rotated":
            energy_reweight += e
        directions.append(DirectionChange(
            index=i, tuned_index=j, s_base=float(b[i]), s_tuned=s_t, ratio=float(ratio),
            cos=cos, cos_read=float(abs(Cu[i, j])), cos_write=float(abs(Cv[i, j])),
            gain=float(a[i] / b[i]) if b[i] > null else 0.0, energy=e, kind=kind, group=group_of.get(i),
        ))
    energy_reweight = min(energy_reweight, energy_total)
    return HeadChange(
        layer=base.layer, head=base.head, norm_base=norm_base, norm_tuned=float(np.sqrt(np.sum(st ** 2))),
        energy_total=energy_total, energy_reweight=energy_reweight, energy_rotation=energy_total - energy_reweight,
        angle_read=angle_read, angle_write=angle_write,
        changed=bool(changed), directions=directions,
    )


def _settings(cos_threshold: float, ratio_tol: float, change_tol: float, **extra) -> dict:
    if not 0.0 < cos_threshold <= 1.0:
        raise WeightscopeError(f"cos_threshold must be in (0, 1], got {cos_threshold}")
    if min(ratio_tol, change_tol, extra.get("tie_factor", 0.0)) < 0:
        raise WeightscopeError(f"ratio_tol, change_tol and tie_factor must be >= 0, got {ratio_tol}, {change_tol} "
                               f"and {extra.get('tie_factor')}")
    return {"cos_threshold": float(cos_threshold), "ratio_tol": float(ratio_tol), "change_tol": float(change_tol), **extra}


def compare_decompositions(
    base_svds: dict[tuple[int, int], HeadSVD],
    tuned_svds: dict[tuple[int, int], HeadSVD],
    *,
    base_name: str = "base",
    tuned_name: str = "tuned",
    cos_threshold: float = 0.8,
    ratio_tol: float = 0.05,
    change_tol: float = 1e-4,
    tie_factor: float = 0.25,
    settings: dict | None = None,
    progress: bool = True,
) -> Comparison:
    """Compare two ``decompose_model`` results head by head (keys present in both; they must be the same set)."""
    if set(base_svds) != set(tuned_svds):
        only = sorted(set(base_svds) ^ set(tuned_svds))[:3]
        raise WeightscopeError(f"the two decompositions cover different heads (e.g. {only}); decompose the same "
                               "layers and heads of both checkpoints")
    first = next(iter(base_svds.values()), None)
    shape = {"width": int(first.read.shape[1]), "rank": int(first.s.size)} if first is not None else {}
    cfg = _settings(cos_threshold, ratio_tol, change_tol, tie_factor=float(tie_factor), **shape, **(settings or {}))
    result = Comparison(base_name, tuned_name, cfg)
    with threadpool_limits(limits=1, user_api="blas"):  # r x r problems: threads only add overhead (see decompose)
        for key in tqdm(sorted(base_svds), desc="compare heads", unit="head", disable=not progress):
            result.heads[key] = compare_heads(base_svds[key], tuned_svds[key], cos_threshold, ratio_tol, change_tol,
                                              tie_factor)
    return result


def compare_weights(
    base: VisionWeights,
    tuned: VisionWeights,
    *,
    layers=None,
    heads=None,
    fold_ln: bool = False,
    center_write: bool = False,
    rtol: float = 1e-3,
    cos_threshold: float = 0.8,
    ratio_tol: float = 0.05,
    change_tol: float = 1e-4,
    tie_factor: float = 0.25,
    base_name: str | None = None,
    tuned_name: str | None = None,
    base_svds: dict[tuple[int, int], HeadSVD] | None = None,
    progress: bool = True,
) -> Comparison:
    """Compare the value-output matrices of two neutral descriptions of the same architecture.

    layers / heads: indices to compare (default all); fold_ln / center_write / rtol: passed to ``decompose_model``
    (keep the defaults to use labels from ``inspect_model``); base_svds: a decomposition of ``base`` made with the
    same options, reused when comparing one base with many tuned checkpoints.
    """
    check_same_architecture(base, tuned)
    opts = dict(layers=layers, heads=heads, fold_ln=fold_ln, center_write=center_write, rtol=rtol, progress=progress)
    if base_svds is None:
        base_svds = decompose_model(base, **opts)
    tuned_svds = decompose_model(tuned, **opts)
    return compare_decompositions(
        base_svds, tuned_svds,
        base_name=base_name or base.meta.get("name", "base"), tuned_name=tuned_name or tuned.meta.get("name", "tuned"),
        cos_threshold=cos_threshold, ratio_tol=ratio_tol, change_tol=change_tol, tie_factor=tie_factor,
        settings={"fold_ln": fold_ln, "center_write": center_write, "rtol": rtol}, progress=progress,
    )


# --------------------------------------------------------------------------------------------------- labels


def _write_labels(report, n_concepts: int) -> dict[int, list]:
    """{direction index: [[concept, coefficient], ...]} of a HeadReport's write directions, sign +1."""
    out = {}
    for d in getattr(report, "directions", []):
        if d.side == "write" and d.sign == 1:
            out[d.index] = [[c, float(w)] for c, w in zip(d.concepts[:n_concepts], d.coefficients[:n_concepts])]
    return out


def label_comparison(comparison: Comparison, base_inspection=None, tuned_inspection=None,
                     n_concepts: int = 5) -> Comparison:
    """Attach concept labels to every compared direction, in place; returns ``comparison``.

    base_inspection / tuned_inspection: ``inspect_model`` results (``.heads[(layer, head)]`` with ``.directions``) of
    the base and tuned checkpoints, made with the decomposition defaults; either may be None. A base direction gets
    its own write explanation, its tuned partner's goes to ``tuned_concepts``. Inside a degenerate group the
    canonical direction is a mix of the group's rows; it is labelled with the explanation of its row index (the
    ``group`` field says the label stands for a subspace).
    """
    if base_inspection is None and tuned_inspection is None:
        raise WeightscopeError("label_comparison needs an inspection of the base and/or the tuned checkpoint")
    for key, hc in comparison.heads.items():
        base_rep = getattr(base_inspection, "heads", {}).get(key) if base_inspection is not None else None
        tuned_rep = getattr(tuned_inspection, "heads", {}).get(key) if tuned_inspection is not None else None
        bl = _write_labels(base_rep, n_concepts) if base_rep is not None else {}
        tl = _write_labels(tuned_rep, n_concepts) if tuned_rep is not None else {}
        for d in hc.directions:
            d.base_concepts = bl.get(d.index, [])
            d.tuned_concepts = tl.get(d.tuned_index, [])
    comparison.labelled = True
    return comparison


# --------------------------------------------------------------------------------------------------- checkpoints

SPEC_HELP = (
    "A checkpoint is given as: 'bundled' or 'bundled:base' / 'bundled:tuned' (the shipped shapes-world pair); "
    "NAME:TAG for open_clip pretrained weights (e.g. ViT-B-32:openai; TAG may also be a file path); "
    "a file path (.safetensors/.pt/.pth/.bin) with the architecture from --model NAME (default: the base's); "
    "hf-hub:ORG/REPO; or a bare NAME for a randomly initialised model."
)
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


def parse_checkpoint_spec(spec: str, model: str | None = None) -> dict:
    """Turn a checkpoint spec into ``load_model`` arguments {"model", "pretrained", "checkpoint"} (see SPEC_HELP).

    model: the architecture for a bare file path (the ``--model`` option).
    """
    from .load import BUNDLED

    if not isinstance(spec, str) or not spec.strip():
        raise WeightscopeError(f"empty checkpoint spec {spec!r}. {SPEC_HELP}")
    spec = spec.strip()
    if spec == BUNDLED or spec.startswith(BUNDLED + ":"):
        which = spec.partition(":")[2] or "base"
        return {"model": BUNDLED, "pretrained": which, "checkpoint": None}
    if Path(spec).is_file() or spec.lower().endswith(CHECKPOINT_SUFFIXES):
        from .checkpoints import architecture, read_sidecar

        if model is None and Path(spec).is_file() and architecture(read_sidecar(spec)):
            return {"model": spec, "pretrained": None, "checkpoint": None}  # weightscope wrote it: loads by path
        if model is None:
            raise WeightscopeError(f"checkpoint file {spec} needs its architecture: pass --model NAME "
                                   "(the open_clip model name it was trained with)")
        return {"model": model, "pretrained": None, "checkpoint": spec}
    if spec.startswith(("hf-hub:", "local-dir:")):
        return {"model": spec, "pretrained": None, "checkpoint": None}
    name, sep, tag = spec.partition(":")
    if sep and not (name and tag):
        raise WeightscopeError(f"bad checkpoint spec {spec!r}: write NAME:TAG. {SPEC_HELP}")
    return {"model": name, "pretrained": tag or None, "checkpoint": None}


def load_checkpoint(spec: str, model: str | None = None, trust_checkpoint: bool = False):
    """``load_model`` for a checkpoint spec (see :func:`parse_checkpoint_spec`); returns a LoadedModel.
    trust_checkpoint: as :func:`weightscope.load.load_model` (unpickle torch files in full; never by default)."""
    from .load import BUNDLED, load_model
    from .shapes import bundled

    args = parse_checkpoint_spec(spec, model)
    if args["model"] == bundled.MODEL_NAME:
        bundled.register()  # a bare path with the bundled architecture
    if args["model"] == BUNDLED:
        return load_model(BUNDLED, pretrained=args["pretrained"])
    return load_model(args["model"], pretrained=args["pretrained"], checkpoint=args["checkpoint"],
                      trust_checkpoint=trust_checkpoint)


def architecture_of(loaded) -> str:
    """The architecture name to use for bare checkpoint paths compared with ``loaded``."""
    from .shapes import bundled

    return bundled.MODEL_NAME if loaded.source.startswith("bundled") else loaded.name


def compare_models(
    base,
    tuned,
    *,
    model: str | None = None,
    base_inspection=None,
    tuned_inspection=None,
    progress: bool = True,
    **options,
) -> Comparison:
    """Compare two checkpoints given as LoadedModels, open_clip modules or specs (see :data:`SPEC_HELP`).

    model: architecture for bare checkpoint paths (default: the base's). options: as :func:`compare_weights`.
    base_inspection / tuned_inspection: optional ``inspect_model`` results for :func:`label_comparison`.
    """
    from .adapters import describe_model
    from .load import LoadedModel, load_model

    def resolve(x, arch):
        if isinstance(x, LoadedModel):
            return x
        if isinstance(x, str):
            return load_checkpoint(x, arch)
        return load_model(x)

    base_loaded = resolve(base, model)
    base_w = describe_model(base_loaded)
    tuned_loaded = resolve(tuned, model or architecture_of(base_loaded))
    tuned_w = describe_model(tuned_loaded)
    result = compare_weights(base_w, tuned_w, base_name=base_loaded.identity, tuned_name=tuned_loaded.identity,
                             progress=progress, **options)
    if base_inspection is not None or tuned_inspection is not None:
        label_comparison(result, base_inspection, tuned_inspection)
    return result


def compare_many(
    base: str,
    tuned: list[str],
    *,
    model: str | None = None,
    label: bool = False,
    vocabulary=None,
    n_directions: int | None = None,
    progress: bool = True,
    trust_checkpoint: bool = False,
    **options,
) -> list[Comparison]:
    """Compare one base checkpoint with several tuned ones (specs), one tuned model in memory at a time.

    The base is decomposed (and, with ``label``, inspected) once; each tuned checkpoint is loaded, described,
    decomposed, compared and freed before the next. label: run ``inspect_model`` on every checkpoint (vocabulary,
    n_directions: passed to it) and attach the labels. options: as :func:`compare_weights` (not base_svds).
    trust_checkpoint: as :func:`weightscope.load.load_model`.
    """
    from .adapters import describe_model

    if not tuned:
        raise WeightscopeError("give at least one tuned checkpoint to compare with the base")
    opts = {k: options[k] for k in ("layers", "heads", "fold_ln", "center_write", "rtol") if k in options}
    base_loaded = load_checkpoint(base, model, trust_checkpoint)
    arch = model or architecture_of(base_loaded)
    base_id = base_loaded.identity
    base_w = describe_model(base_loaded)
    base_svds = decompose_model(base_w, progress=progress, **opts)
    base_insp = _inspect(base_loaded, vocabulary, n_directions, options, progress) if label else None
    del base_loaded
    gc.collect()

    results = []
    for spec in tqdm(tuned, desc="checkpoints", unit="ckpt", disable=not progress or len(tuned) < 2):
        loaded = load_checkpoint(spec, arch, trust_checkpoint)
        tuned_w = describe_model(loaded)
        result = compare_weights(base_w, tuned_w, base_svds=base_svds, base_name=base_id,
                                 tuned_name=loaded.identity, progress=progress, **options)
        if label:
            label_comparison(result, base_insp, _inspect(loaded, vocabulary, n_directions, options, progress))
        results.append(result)
        del loaded, tuned_w
        gc.collect()
    return results


def _inspect(loaded, vocabulary, n_directions, options, progress):
    from .inspection import inspect_model  # the lead's module; only needed for labels

    return inspect_model(loaded, vocabulary, layers=options.get("layers"), heads=options.get("heads"),
                         n_directions=n_directions, sides=("write",), progress=progress)
