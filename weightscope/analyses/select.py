"""Choosing which directions to edit, with no language model (METHODS.md section 6).

- :func:`select_by_query`: directions whose joint-space image (or its sparse explanation) is close to a text
  query embedded by the model's own text tower.
- :func:`select_by_concepts`: directions whose explanation in an ``Inspection`` names given concepts.
- :func:`select_by_relevance`: SITH's task-relevance reweighting for a pool of class names,
  ``R(v) = sum_k c_k max_{g in pool} cos(concept_k, g)``, ``alpha = max(0.8, R(v) + 0.3)``.
- explicit lists: :func:`weightscope.analyses.edit.parse_edit`.

Every helper returns :class:`~weightscope.analyses.edit.Edit` records (with ``reason`` and ``score``) sorted by score,
ties broken by (layer, head, index), for :func:`weightscope.analyses.edit.apply_edits`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..decompose.head_svd import decompose_model
from .edit import BASIS, Edit
from ..core.errors import WeightscopeError
from ..decompose.joint import to_joint
from ..core.linalg import normalize_rows, orthonormal_basis
from ..core.weights import VisionWeights

BY = ("joint", "explanation")


@dataclass
class Unit:
    """One editable direction: a singular pair, or a degenerate group (only its span is defined).

    indices: singular indices in the head; s: (n,) their singular values; joint: (n, E) unit joint-space images
    of the write directions.
    """

    layer: int
    head: int
    indices: tuple[int, ...]
    s: np.ndarray
    joint: np.ndarray


def direction_units(weights: VisionWeights, layers=None, heads=None, *, image_mean=None,
                    fold_ln: bool = BASIS["fold_ln"], center_write: bool = BASIS["center_write"],
                    rtol: float = BASIS["rtol"], progress: bool = True) -> list[Unit]:
    """All editable units of the chosen heads (default: all), in (layer, head, index) order.

    Only the head's real directions are units: singular values at rounding level (index >= ``HeadSVD.rank``, see
    weightscope.decompose) have arbitrary vectors and are skipped; a dead head has none.
    """
    svds = decompose_model(weights, layers, heads, "vo", fold_ln, center_write, rtol, progress=progress)
    units = []
    for (layer, head), svd in svds.items():
        if svd.rank == 0:
            continue
        Z = to_joint(weights, svd.write, image_mean=image_mean)
        in_group = {i: tuple(g) for g in svd.groups for i in g}
        done = set()
        for i in range(svd.rank):
            idx = in_group.get(i, (i,))
            if idx[0] in done:
                continue
            done.add(idx[0])
            sel = list(idx)
            units.append(Unit(layer, head, idx, svd.s[sel], Z[sel]))
    return units


def _texts(items, what: str) -> list[str]:
    items = [items] if isinstance(items, str) else list(items)
    if not items or any(not isinstance(q, str) or not q.strip() for q in items):
        raise WeightscopeError(f"{what} must be one or more non-empty strings, got {items!r}")
    return [" ".join(q.split()) for q in items]


def _tokenizer(model, tokenizer):
    if tokenizer is not None:
        return tokenizer
    if getattr(model, "tokenizer", None) is not None:
        return model.tokenizer
    raise WeightscopeError("pass tokenizer= (the model's open_clip tokenizer) or a LoadedModel, which carries it")


def _module(model):
    return getattr(model, "model", model)


def embed_texts(model, texts: Sequence[str], tokenizer=None, vocabulary=None) -> np.ndarray:
    """Unit text embeddings (n, E) from the model's own text tower.

    vocabulary: None, or a vocabulary (built-in name, file or list) whose mean unit embedding is subtracted
    before renormalising, the SpLiCE centring that concept dictionaries get (METHODS.md section 4), so a query
    lives where the dictionary's atoms do instead of sharing the text cloud's common offset.
    """
    from ..concepts.embed import embed_concepts, encode_texts

    tok = _tokenizer(model, tokenizer)
    q = normalize_rows(encode_texts(_module(model), tok, list(texts), progress=False).astype(np.float64))
    if vocabulary is not None:
        mean = embed_concepts(_module(model), tok, vocabulary, normalize="l2", progress=False).astype(np.float64).mean(0)
        q = normalize_rows(q - mean)
    return q


def _sign(c: float) -> str:
    return "+" if c >= 0 else "-"


def score_by_query(model, queries, *, tokenizer=None, weights: VisionWeights | None = None, layers=None,
                   heads=None, by: str = "joint", explainer=None, image_mean=None, alpha: float = 0.0,
                   basis: dict | None = None, progress: bool = True) -> list[Edit]:
    """Every unit of the chosen layers/heads scored against the queries, best first (see select_by_query).

    explainer: a ``ConceptExplainer`` whose vocabulary centres the queries and, with by="explanation", explains
    the directions (its method, k, lambda; SpLiCE-normalised atoms); None: no centring. basis: the direction
    basis options {fold_ln, center_write, rtol} (default ``edit.BASIS``)."""
    from ..models.adapters import describe_model

    queries = _texts(queries, "queries")
    if by not in BY:
        raise WeightscopeError(f"unknown scoring {by!r}: expected one of {', '.join(BY)}")
    vocabulary = None if explainer is None or explainer.vocabulary is None else explainer.concepts
    if by == "explanation" and vocabulary is None:
        raise WeightscopeError("scoring by explanation needs a concept vocabulary (e.g. vocabulary='general')")
    weights = weights if weights is not None else describe_model(_module(model))
    units = direction_units(weights, layers, heads, image_mean=image_mean, progress=progress,
                            **{**BASIS, **(basis or {})})
    if not units:
        return []
    Q = embed_texts(model, queries, tokenizer, vocabulary)  # (nq, E)
    if by == "joint":
        scored = [_joint_score(u, Q, queries) for u in units]
    else:
        scored = _explanation_scores(model, units, Q, queries, tokenizer, explainer, progress)
    edits = [Edit(u.layer, u.head, u.indices if len(u.indices) > 1 else u.indices[0], alpha, reason, float(score))
             for u, (score, reason) in zip(units, scored)]
    return sorted(edits, key=lambda e: (-e.score, e.layer, e.head, e.indices))


def _joint_score(u: Unit, Q: np.ndarray, queries: list[str]) -> tuple[float, str]:
    """|cos| for a single direction (a head writes +v or -v); for a group, the largest cosine any unit vector
    of the group's joint span reaches, i.e. the norm of the query's projection onto that span."""
    if len(u.indices) == 1:
        c = u.joint[0] @ Q.T
        j = int(np.argmax(np.abs(c)))
        return abs(float(c[j])), f'write {_sign(c[j])}v has cos {c[j]:+.3f} with "{queries[j]}" in joint space'
    basis = orthonormal_basis(u.joint)
    proj = np.linalg.norm(Q @ basis.T, axis=1)
    j = int(np.argmax(proj))
    return float(proj[j]), (f'degenerate group of {len(u.indices)}: its joint span reaches cos {proj[j]:.3f} '
                            f'with "{queries[j]}"')


def _explanation_scores(model, units, Q, queries, tokenizer, explainer, progress):
    """Cosine between each direction's sparse explanation (c D_S, both signs) and the query; group: best member."""
    from ..concepts.embed import embed_concepts

    concepts = explainer.concepts
    D = embed_concepts(_module(model), _tokenizer(model, tokenizer), concepts, normalize="splice",
                       cache_dir=explainer.cache_dir, progress=progress).astype(np.float64)
    Z = np.concatenate([u.joint for u in units])
    ex = explainer.explain(Z, D, both_signs=True, progress=progress)
    idx = np.where(ex.indices >= 0, ex.indices, 0)
    rec = normalize_rows(np.einsum("nk,nke->ne", ex.coefficients * (ex.indices >= 0), D[idx]))
    cos = rec @ Q.T  # (2n, nq)
    n = Z.shape[0]
    out, row = [], 0
    for u in units:
        rows = [r + sgn * n for sgn in (0, 1) for r in range(row, row + len(u.indices))]
        r, j = np.unravel_index(np.argmax(cos[rows]), (len(rows), len(queries)))
        best = rows[r]
        terms = " + ".join(f'{c:.2f} "{concepts[i]}"' for i, c in zip(ex.indices[best], ex.coefficients[best])
                           if i >= 0 and c > 0)
        sign = "+" if best < n else "-"
        out.append((float(cos[best, j]), f'write {sign}v explained as {terms or "nothing"}; '
                                         f'cos {cos[best, j]:+.3f} with "{queries[j]}"'))
        row += len(u.indices)
    return out


def select_by_query(model, queries, *, alpha: float = 0.0, top: int | None = None, threshold: float | None = None,
                    **kwargs) -> list[Edit]:
    """Directions whose joint-space image is close to a text query; each becomes an Edit with ``alpha``.

    model: LoadedModel (or an open_clip CLIP with ``tokenizer=``). queries: one string or several (a direction
    scores its best query). by="joint" (default): |cos| between the query embedding and the joint image of the
    write direction (both signs count); by="explanation": cosine between the query and the direction's sparse
    explanation by ``explainer`` (a ``ConceptExplainer``). layers / heads restrict the search. The explainer's
    vocabulary also centres the query (see :func:`embed_texts`); image_mean is passed to ``to_joint``.
    top: keep the N best; threshold: keep scores >= T (both: the best N above T; neither: top 5).
    """
    _check_limits(top, threshold)  # before the scoring, which is the slow part
    return best_edits(score_by_query(model, queries, alpha=alpha, **kwargs), top, threshold)


def _check_limits(top, threshold) -> int | None:
    """The validated ``top`` (5 when neither top nor threshold is given)."""
    if top is None and threshold is None:
        top = 5
    if top is not None and (isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1):
        raise WeightscopeError(f"top must be a positive integer, got {top!r}")
    if threshold is not None and not (isinstance(threshold, (int, float)) and np.isfinite(threshold)):
        raise WeightscopeError(f"threshold must be a finite number (a cosine, e.g. 0.3), got {threshold!r}")
    return top


def best_edits(edits: list[Edit], top: int | None = None, threshold: float | None = None) -> list[Edit]:
    """Of edits sorted best first: the top N, or those scoring >= threshold, or the best N above it (neither: 5)."""
    top = _check_limits(top, threshold)
    if threshold is not None:
        edits = [e for e in edits if e.score >= threshold]
    return edits[:top] if top is not None else edits


# -------------------------------------------------------------------- from an Inspection

def _key(text: str) -> str:
    return " ".join(str(text).split()).casefold()


def _directions(inspection, sides):
    """(layer, head, index, direction) for each explained direction on the chosen sides, in a fixed order."""
    heads = getattr(inspection, "heads", None)
    if not isinstance(heads, Mapping):
        raise WeightscopeError("expected an Inspection (from weightscope.analyses.inspection.inspect_model) with .heads")
    for (layer, head) in sorted(heads):
        for d in heads[(layer, head)].directions:
            if d.side in sides:
                idx = tuple(d.index) if isinstance(d.index, (tuple, list)) else int(d.index)
                yield layer, head, idx, d


def _merge(edits: Iterable[Edit]) -> list[Edit]:
    """One edit per (layer, head, index): the best-scoring, reasons joined; sorted best first."""
    best: dict = {}
    for e in edits:
        key = (e.layer, e.head, e.indices)
        if key not in best:
            best[key] = e
        else:
            old = best[key]
            keep, other = (e, old) if e.score > old.score else (old, e)
            best[key] = Edit(keep.layer, keep.head, keep.index, keep.alpha, f"{keep.reason}; {other.reason}", keep.score)
    return sorted(best.values(), key=lambda e: (-e.score, e.layer, e.head, e.indices))


def select_by_concepts(inspection, concepts, *, alpha: float = 0.0, sides: Sequence[str] = ("write",),
                       min_coefficient: float = 0.0) -> list[Edit]:
    """Directions whose explanation names any of ``concepts`` (case-insensitive), scored by the sum of those
    concepts' coefficients. sides: which explanations count ("write", "read" or both)."""
    wanted = {_key(c) for c in _texts(concepts, "concepts")}
    out = []
    for layer, head, idx, d in _directions(inspection, sides):
        hits = [(c, w) for c, w in zip(d.concepts, d.coefficients) if _key(c) in wanted and w > min_coefficient]
        if hits:
            names = ", ".join(f'"{c}" {w:.2f}' for c, w in hits)
            out.append(Edit(layer, head, idx, alpha, f"{d.side} {_sign(d.sign)}v explained by {names}",
                            float(sum(w for _, w in hits))))
    return _merge(out)


def select_by_relevance(inspection, class_pool, *, embed: Callable[[list[str]], np.ndarray] | None = None,
                        model=None, tokenizer=None, explainer=None, floor: float = 0.8, offset: float = 0.3,
                        sides: Sequence[str] = ("write",)) -> list[Edit]:
    """SITH's classification boost: every explained direction gets ``alpha = max(floor, R + offset)`` with
    ``R = sum_k c_k max_{g in pool} cos(concept_k, g)`` (a pair explained on several sides/signs: its largest R).

    Concept and class texts are embedded by ``embed`` (list[str] -> (n, E)), else by the model's text tower
    (:func:`embed_texts`, centred on the ``explainer``'s vocabulary when given: use the ``ConceptExplainer`` the
    explanations came from).
    """
    pool = _texts(class_pool, "class_pool")
    dirs = list(_directions(inspection, sides))
    needed = sorted({c for *_, d in dirs for c in d.concepts} | set(pool))
    if embed is None:
        if model is None:
            raise WeightscopeError("select_by_relevance needs embed= or model= (to embed concepts and classes)")
        vocabulary = None if explainer is None or explainer.vocabulary is None else explainer.concepts
        emb = embed_texts(model, needed, tokenizer, vocabulary)
    else:
        emb = normalize_rows(np.asarray(embed(needed), dtype=np.float64))
    row = {t: i for i, t in enumerate(needed)}
    G = emb[[row[g] for g in pool]]
    out = []
    for layer, head, idx, d in dirs:
        if not d.concepts:
            continue
        best = (emb[[row[c] for c in d.concepts]] @ G.T).max(axis=1)  # (k,) max over the pool
        R = float(np.dot(d.coefficients, best))
        alpha = max(floor, R + offset)
        top = int(np.argmax(np.asarray(d.coefficients) * best))
        out.append(Edit(layer, head, idx, alpha, f'task relevance R={R:.3f} ({d.side} {_sign(d.sign)}v, '
                                                 f'"{d.concepts[top]}" nearest class cos {best[top]:.2f})', R))
    return _merge(out)
