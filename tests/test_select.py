"""Selection of directions to edit, on planted cases whose scores are derived by hand.

The planted heads live in the shared asymmetric model (ln_post gains 0.5-1.5), so a joint image computed without
the gain is off too. Query and dictionary embeddings are planted as well (unit vectors with known cosines), which
makes each selection mode's answer a hand-derived number rather than a snapshot; and the cases are built so that
scoring a direction's raw joint image and scoring its explanation's reconstruction give different answers.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from weightscope.concepts.explainer import ConceptExplainer
from weightscope import WeightscopeError, describe_model, to_joint
from weightscope.concepts import embed as embed_module
from weightscope.analyses import select
from weightscope.decompose import decompose_head
from weightscope.analyses.select import best_edits, direction_units, score_by_query, select_by_concepts, select_by_query, \
    select_by_relevance


def _unit(x):
    return np.asarray(x, dtype=np.float64) / np.linalg.norm(x)


def _residual_for(weights, target):
    """A residual direction v (D,) whose joint image is ``target`` (E,): (gamma * (v - mean v)) @ proj = target."""
    P = np.eye(weights.width) - 1.0 / weights.width
    return np.linalg.lstsq(((P * weights.ln_post.scale) @ weights.proj).T, target, rcond=None)[0]


def _plant_head(weights, layer, head, writes, s_top, seed=0):
    """Rebuild head (layer, head) so that its leading write directions span ``writes`` in order (QR of them, then
    random completion) with singular values ``s_top``, the others <= 1; the read factor keeps its span."""
    attn = weights.layers[layer].attn
    D, dh = attn.read_v[head].shape
    rng = np.random.default_rng(seed)
    Vt = np.linalg.qr(np.column_stack([*writes, rng.normal(size=(D, dh - len(writes)))]))[0].T
    s = np.r_[s_top, np.linspace(1.0, 0.5, dh - len(s_top))]
    R = np.linalg.qr(attn.read_v[head])[1]
    attn.write_o[head] = np.linalg.solve(R, s[:, None] * Vt)


def _orient(weights, layer, head, target):
    """Make direction 0's joint image point along ``target`` rather than against it (W -> -W keeps u, flips v)."""
    if to_joint(weights, decompose_head(weights, layer, head).write[0]) @ target < 0:
        weights.layers[layer].attn.write_o[head] *= -1


E0, E1, E2 = (np.eye(32)[i] for i in range(3))
#: planted dictionary (unit atoms): two orthogonal to the query, one at 45 degrees to it
ATOMS = {"one": E1, "two": E2, "half": _unit(E0 + E1)}
QUERY = E0


@pytest.fixture
def planted(asym_model, monkeypatch):
    """Weights with three planted heads in layer 1, and the text side replaced by planted embeddings.

    (1, 2) direction 0: joint image z_A = unit(E0 + 0.8 E2): |cos| with the query 1/sqrt(1.64) = 0.781, but its
    explanation (k = 1) is the atom "two" (<z_A, two> = 0.625 > <z_A, half> = 0.552), orthogonal to the query.
    (1, 3) direction 0: joint image z_B = atom "half": cos 1/sqrt(2) = 0.707 both ways.
    (1, 1) directions 0 and 1: tied singular values, joint images unit(E0 + E1) and unit(E0 - E1) span the query
    though neither is it (cos 0.707 each); the group's span reaches cos 1.
    """
    weights = describe_model(asym_model)
    assert weights.embed_dim == 32
    _plant_head(weights, 1, 2, [_residual_for(weights, _unit(E0 + 0.8 * E2))], [50.0])
    _orient(weights, 1, 2, E0)
    _plant_head(weights, 1, 3, [_residual_for(weights, ATOMS["half"])], [40.0])
    _orient(weights, 1, 3, E0)
    _plant_head(weights, 1, 1, [_residual_for(weights, _unit(E0 + E1)), _residual_for(weights, _unit(E0 - E1))],
                [30.0, 30.0])
    names = list(ATOMS)

    def fake_texts(model, texts, tokenizer=None, vocabulary=None):
        assert list(texts) == ["the query"]
        return QUERY[None, :].copy()

    def fake_concepts(model, tokenizer, concepts, *args, **kwargs):
        assert list(concepts) == names
        return np.stack([ATOMS[c] for c in names])  # float64: a fit that is exact leaves a residual ~1e-13

    monkeypatch.setattr(select, "embed_texts", fake_texts)
    monkeypatch.setattr(embed_module, "embed_concepts", fake_concepts)
    return weights, names


def _scores(weights, names, by, **kw):
    edits = score_by_query(None, "the query", explainer=ConceptExplainer(names if by == "explanation" else None, method="comp", k=1), tokenizer=object(), weights=weights, layers=[1], by=by, progress=False, **kw)
    return {(e.layer, e.head, e.indices): e for e in edits}


def test_joint_mode_scores_the_joint_image(planted):
    weights, names = planted
    got = _scores(weights, names, "joint")
    assert got[1, 2, (0,)].score == pytest.approx(1 / np.sqrt(1.64), abs=1e-9)
    assert got[1, 3, (0,)].score == pytest.approx(1 / np.sqrt(2), abs=1e-9)
    assert got[1, 1, (0, 1)].score == pytest.approx(1.0, abs=1e-9)  # the group's span holds the query
    assert (1, 1, (0,)) not in got and (1, 1, (1,)) not in got  # a group is one unit
    # every single direction scores |cos| of its own joint image with the query
    for (layer, head, idx), e in got.items():
        if len(idx) == 1:
            z = to_joint(weights, decompose_head(weights, layer, head).write[idx[0]])
            assert e.score == pytest.approx(abs(z @ QUERY), abs=1e-9)
            assert ("+v" if z @ QUERY >= 0 else "-v") in e.reason
    top = select_by_query(None, "the query", tokenizer=object(), weights=weights, layers=[1], threshold=0.75,
                          progress=False)
    assert [(e.layer, e.head, e.indices) for e in top] == [(1, 1, (0, 1)), (1, 2, (0,))]


def test_explanation_mode_scores_the_reconstruction(planted):
    """Kind 8: by="explanation" ranks B above A, by="joint" ranks A above B."""
    weights, names = planted
    got = _scores(weights, names, "explanation")
    assert got[1, 2, (0,)].score == pytest.approx(0.0, abs=1e-9)  # explained as "two", orthogonal to the query
    assert '"two"' in got[1, 2, (0,)].reason
    assert got[1, 3, (0,)].score == pytest.approx(1 / np.sqrt(2), abs=1e-6)  # explained as "half"
    assert '"half"' in got[1, 3, (0,)].reason
    # a group scores its best member: each of unit(E0 +- E1) is explained by "half" (+) or nothing useful
    assert got[1, 1, (0, 1)].score == pytest.approx(1 / np.sqrt(2), abs=1e-6)
    # k = 2, NN-OMP: "half" fits z_B exactly, so its pursuit stops after one atom (the second slot is padding)
    k2 = score_by_query(None, "the query", explainer=ConceptExplainer(names, method="nnomp", k=2), tokenizer=object(), weights=weights, layers=[1], heads=[3], by="explanation", progress=False)
    assert {(e.head, e.indices): e.score for e in k2}[3, (0,)] == pytest.approx(1 / np.sqrt(2), abs=1e-6)
    chosen = select_by_query(None, "the query", explainer=ConceptExplainer(names, k=1), tokenizer=object(), weights=weights, layers=[1], heads=[2, 3], by="explanation", threshold=0.7, progress=False)
    keys = [(e.layer, e.head, e.indices) for e in chosen]
    assert (1, 3, (0,)) in keys and (1, 2, (0,)) not in keys
    joint = _scores(weights, names, "joint")
    assert joint[1, 2, (0,)].score > joint[1, 3, (0,)].score  # the two modes disagree on this pair


def test_explanation_mode_explains_both_signs(planted):
    """A direction whose -v is what the dictionary explains: its score comes from the minus sign."""
    weights, names = planted
    _plant_head(weights, 1, 0, [_residual_for(weights, -ATOMS["half"])], [45.0])
    _orient(weights, 1, 0, -ATOMS["half"])
    np.testing.assert_allclose(to_joint(weights, decompose_head(weights, 1, 0).write[0]), -ATOMS["half"], atol=1e-9)
    got = _scores(weights, names, "explanation")
    assert got[1, 0, (0,)].score == pytest.approx(1 / np.sqrt(2), abs=1e-6)
    assert "write -v explained as" in got[1, 0, (0,)].reason


def test_units_skip_only_rounding_level_directions(asym_model):
    """Units are exactly the head's real directions (index < HeadSVD.rank): one far above the rounding floor is kept,
    those at 1e-9 and below (float32 weights: floor ~ 2 eps |A| |B|) are skipped."""
    weights = describe_model(asym_model)
    attn = weights.layers[0].attn
    D, dh = attn.read_v[2].shape
    Vt = np.linalg.qr(np.random.default_rng(6).normal(size=(D, dh)))[0].T
    s = np.r_[1.0, 0.5, 1e-3, np.geomspace(1e-9, 1e-12, dh - 3)]
    attn.write_o[2] = np.linalg.solve(np.linalg.qr(attn.read_v[2])[1], s[:, None] * Vt)
    assert decompose_head(weights, 0, 2).rank == 3
    units = direction_units(weights, layers=[0], heads=[2], rtol=1e-12, progress=False)
    assert [u.indices for u in units] == [(0,), (1,), (2,)]


def test_embed_texts_by_hand(tiny_name, tiny_model):
    """Unit text embeddings from encode_text; with a vocabulary, minus the vocabulary's mean unit embedding,
    renormalised."""
    import open_clip
    import torch

    tok = open_clip.get_tokenizer(tiny_name)
    vocab = ["red", "blue", "a green square", "circle"]

    def unit_text(texts):
        with torch.no_grad():
            return torch.nn.functional.normalize(tiny_model.encode_text(tok(texts)).double(), dim=-1).numpy()

    q = unit_text(["a blue circle", "dog"])
    np.testing.assert_allclose(select.embed_texts(tiny_model, ["a blue circle", "dog"], tok), q, atol=1e-5)
    centred = q - unit_text(vocab).mean(axis=0)
    centred /= np.linalg.norm(centred, axis=1, keepdims=True)
    np.testing.assert_allclose(select.embed_texts(tiny_model, ["a blue circle", "dog"], tok, vocabulary=vocab),
                               centred, atol=1e-5)
    loaded = SimpleNamespace(model=tiny_model, tokenizer=tok)  # a LoadedModel carries its tokenizer
    np.testing.assert_allclose(select.embed_texts(loaded, ["dog"]), q[1:], atol=1e-5)
    with pytest.raises(WeightscopeError, match="pass tokenizer="):
        select.embed_texts(tiny_model, ["dog"])

    # select_by_relevance embeds with the model's text tower when given model= (here checked by hand)
    insp = _inspection({(0, 0): [_d(0, "write", 1, ["red", "circle"], [0.5, 0.25])]})
    (got,) = select_by_relevance(insp, ["a blue circle", "dog"], model=tiny_model, tokenizer=tok)
    emb = dict(zip(["red", "circle", "a blue circle", "dog"], unit_text(["red", "circle", "a blue circle", "dog"])))
    R = sum(c * max(emb[k] @ emb["a blue circle"], emb[k] @ emb["dog"]) for k, c in (("red", 0.5), ("circle", 0.25)))
    assert got.score == pytest.approx(R, abs=1e-5)


def test_units_skip_rounding_level_directions_and_keep_groups(asym_model):
    weights = describe_model(asym_model)
    attn = weights.layers[0].attn
    D, dh = attn.read_v[1].shape
    rng = np.random.default_rng(5)
    Vt = np.linalg.qr(rng.normal(size=(D, dh)))[0].T
    s = np.r_[4.0, 4.0, 2.0, np.full(dh - 3, 1e-12)]  # a tie, then a rank-3 head
    attn.write_o[1] = np.linalg.solve(np.linalg.qr(attn.read_v[1])[1], s[:, None] * Vt)
    units = direction_units(weights, layers=[0], heads=[1], progress=False)
    assert [u.indices for u in units] == [(0, 1), (2,)]
    np.testing.assert_allclose(units[0].s, [4.0, 4.0])
    np.testing.assert_allclose(units[1].joint, to_joint(weights, decompose_head(weights, 0, 1).write[2:3]), atol=1e-12)


def test_best_edits_top_and_threshold_edges():
    from weightscope.analyses.edit import Edit

    edits = [Edit(0, 0, i, 0.0, "", sc) for i, sc in enumerate([0.9, 0.5, 0.3, 0.3, 0.1])]
    assert [e.index for e in best_edits(edits, top=2)] == [0, 1]
    assert [e.index for e in best_edits(edits, top=1)] == [0]
    many = [Edit(0, 0, i, 0.0, "", 0.9 - 0.01 * i) for i in range(8)]
    assert len(best_edits(many, threshold=0.5)) == 8  # a threshold alone is not capped at 5
    assert [e.index for e in best_edits(edits, threshold=0.3)] == [0, 1, 2, 3]  # >= keeps the edge
    assert [e.index for e in best_edits(edits, threshold=0.30000001)] == [0, 1]
    assert [e.index for e in best_edits(edits, top=3, threshold=0.4)] == [0, 1]
    assert [e.index for e in best_edits(edits)] == [0, 1, 2, 3, 4]  # neither: top 5
    assert len(best_edits(edits * 2)) == 5
    for bad in (0, -1, True, 1.5):
        with pytest.raises(WeightscopeError, match="top must be a positive integer"):
            best_edits(edits, top=bad)
    with pytest.raises(WeightscopeError, match="threshold must be a finite number"):
        best_edits(edits, threshold=float("nan"))


# ------------------------------------------------------------------------------------ from an Inspection

def _inspection(dirs):
    return SimpleNamespace(heads={k: SimpleNamespace(directions=v) for k, v in dirs.items()})


def _d(index, side, sign, concepts, coefficients):
    return SimpleNamespace(index=index, side=side, sign=sign, concepts=concepts, coefficients=coefficients)


def test_concept_mode_scores_the_named_concepts_coefficients():
    """A direction whose explanation names the concept with a small weight scores that weight (summed over the
    named concepts, case- and space-insensitive); one naming it twice (two signs) keeps its best score."""
    insp = _inspection({
        (0, 1): [_d(0, "write", 1, ["stripes", "Red  Circle"], [0.7, 0.2]),
                 _d(0, "write", -1, ["red circle", "dots"], [0.4, 0.3]),
                 _d(3, "write", 1, ["red circle", "blue"], [0.0, 0.9])],     # a zero weight does not count
        (2, 0): [_d(1, "write", 1, ["blue", "red circle"], [0.25, 0.35]),
                 _d(2, "read", 1, ["red circle"], [0.95])],
        (1, 1): [_d((4, 5), "write", 1, ["dots", "red circle", "blue"], [0.1, 0.15, 0.2])],
    })
    got = select_by_concepts(insp, ["red circle"], alpha=0.5)
    assert [(e.layer, e.head, e.index, e.score) for e in got] == [
        (0, 1, 0, pytest.approx(0.4)), (2, 0, 1, pytest.approx(0.35)), (1, 1, (4, 5), pytest.approx(0.15))]
    assert all(e.alpha == 0.5 for e in got)
    assert "write -v" in got[0].reason and "write +v" in got[0].reason  # both explanations named, best first
    assert got[0].reason.index("-v") < got[0].reason.index("+v")
    two = select_by_concepts(insp, ["red circle", "BLUE"])
    assert {(e.layer, e.head, e.indices): e.score for e in two} == pytest.approx(
        {(0, 1, (0,)): 0.4, (0, 1, (3,)): 0.9, (2, 0, (1,)): 0.6, (1, 1, (4, 5)): 0.35})
    tie = select_by_concepts(_inspection({(0, 0): [_d(1, "write", 1, ["x"], [0.5]), _d(1, "write", -1, ["x"], [0.5])]}),
                             ["x"])
    assert tie[0].reason.startswith("write +v") and "; write -v" in tie[0].reason  # a tie keeps the first
    both = select_by_concepts(insp, ["red circle"], sides=("read", "write"))
    assert (both[0].layer, both[0].head, both[0].index, both[0].score) == (2, 0, 2, pytest.approx(0.95))
    assert [e.index for e in select_by_concepts(insp, ["red circle"], min_coefficient=0.3)] == [0, 1]


def test_relevance_mode_alpha_and_score_by_hand():
    """R = sum_k c_k max_g cos(concept_k, g) with planted unit embeddings; alpha = max(floor, R + offset)."""
    vec = {"a": [1, 0, 0], "b": [0, 1, 0], "c": [0, 0, 1], "class x": [0.6, 0.8, 0], "class y": [0, 0.28, 0.96],
           "A": [1, 0, 0]}
    embed = lambda texts: np.array([vec[t] for t in texts], dtype=float)  # noqa: E731
    insp = _inspection({
        (0, 0): [_d(0, "write", 1, ["a", "c"], [0.5, 0.5]),      # R = 0.5*0.6 + 0.5*0.96 = 0.78
                 _d(0, "write", -1, ["b"], [0.9]),               # R = 0.9*0.8 = 0.72 (smaller: not kept)
                 _d(1, "write", 1, [], [])],                     # nothing explained: not a candidate
        (1, 2): [_d(2, "write", 1, ["A", "b"], [2.0, 0.1]),       # R = 2*0.6 + 0.1*0.8 = 1.28
                 _d(2, "read", 1, ["c"], [5.0])],                # read side: ignored by default
    })
    got = select_by_relevance(insp, ["class x", "class y"], embed=embed)
    assert [(e.layer, e.head, e.index) for e in got] == [(1, 2, 2), (0, 0, 0)]
    assert [e.score for e in got] == pytest.approx([1.28, 0.78])
    assert [e.alpha for e in got] == pytest.approx([1.58, 1.08])
    low = select_by_relevance(insp, ["class y"], embed=embed, floor=0.9, offset=0.1)
    # (0,0,0): + R = 0.48, - R = 0.9*0.28 = 0.252 -> 0.48, alpha max(0.9, 0.58); (1,2,2): R = 0.028 -> 0.9
    assert {(e.layer, e.head, e.index): (e.score, e.alpha) for e in low} == {
        (0, 0, 0): (pytest.approx(0.48), pytest.approx(0.9)), (1, 2, 2): (pytest.approx(0.028), pytest.approx(0.9))}
    assert '"c" nearest class cos 0.96' in low[0].reason
    reads = select_by_relevance(insp, ["class y"], embed=embed, sides=("read",))
    assert [(e.index, e.score) for e in reads] == [(2, pytest.approx(4.8))]
    with pytest.raises(WeightscopeError, match="embed= or model="):
        select_by_relevance(insp, ["class x"])
