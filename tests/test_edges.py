"""Right answers at the edges (issue 12, kinds 1, 3 and 4).

Kind 1: the decomposed map is the map a head adds to the residual stream, whatever scales it on the way
(LayerScale, open_clip's per-head scales), and options that only change the attention pattern (QK-norm,
scaled cosine attention) or the MLP (scale_fc) are described, reproduced and edited exactly.
Kind 3: a head that writes nothing, or directions at rounding level, are not explained; empty or zero-weight
explanations are never printed.
Kind 4: non-finite weights are named (tensor, layer, head) in one line before any numerical work.

References are the torch modules' own forward passes (in float64) and dense SVDs of the maps they compute.
"""
import copy
import json

import numpy as np
import pytest
import torch

from weightscope import Inspection, WeightscopeError, decompose_head, describe_model, inspect_model, load_model
from weightscope.analyses.edit import Edit, apply_edits, edit_weights
from weightscope.models.forward import encode_image
from weightscope.analyses.inspection import Direction, HeadReport
from weightscope.reports.inspection import write_report
from weightscope.concepts.solvers import Explanation
from weightscope.concepts.explainer import ConceptExplainer

from conftest import TINY_CFG, make_model, register_config

SEPARATED = 1e-3  # relative singular-value gap above which single singular vectors are defined


@pytest.fixture
def cosine_fix(monkeypatch):
    """open_clip 3.3's scaled-cosine branch calls torch.bmm on 4-D (N, H, T, dh) tensors and fails; batched
    matmul is what it means (its other branches use scaled_dot_product_attention on the same shapes)."""
    monkeypatch.setattr(torch, "bmm", torch.matmul)


def _model(tmp_path, name, seed=0, **vision):
    cfg = {**TINY_CFG, "vision_cfg": {**TINY_CFG["vision_cfg"], **vision}}
    return make_model(register_config(tmp_path, name, cfg), seed=seed)


def _randomise_scales(model, seed=0):
    """Non-uniform values for every scale and normalisation open_clip initialises to constants."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in model.visual.transformer.resblocks:
            for ls in (block.ls_1, block.ls_2):
                if hasattr(ls, "gamma"):  # the input: rand(D)**3 + 1e-3
                    ls.gamma.copy_(torch.rand(ls.gamma.shape, generator=g) ** 3 + 1e-3)
            attn = block.attn
            if getattr(attn, "head_scale", None) is not None:
                attn.head_scale.copy_(torch.tensor([0.3, 1.7, -0.8, 2.5]).reshape(-1, 1, 1))
            if getattr(attn, "logit_scale", None) is not None:  # one head above logit_scale_max (clamped)
                attn.logit_scale.copy_(torch.tensor([1.0, 2.3, 3.1, 5.0]).reshape(-1, 1, 1))
            for ln in (getattr(attn, "ln_q", None), getattr(attn, "ln_k", None), getattr(block.mlp, "ln", None)):
                if isinstance(ln, torch.nn.LayerNorm):
                    ln.weight.copy_(1 + 0.5 * torch.randn(ln.weight.shape, generator=g))
                    ln.bias.copy_(0.1 * torch.randn(ln.bias.shape, generator=g))
            attn.in_proj_bias.copy_(0.1 * torch.randn(attn.in_proj_bias.shape, generator=g))
            attn.out_proj.bias.copy_(0.1 * torch.randn(attn.out_proj.bias.shape, generator=g))
    return model


def _images(model, n=2, seed=0):
    size = model.visual.image_size[0]
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def _embed(model, x):
    with torch.no_grad():
        return model.encode_image(x).double().numpy()


def _module_head_map(model, layer, head):
    """The D x D map head ``head`` of block ``layer`` adds to the residual stream, measured with the block's own
    forward in float64: every token equal (so any attention pattern averages identical values), ln_1 bypassed,
    the MLP silenced and the other heads' values zeroed; row j is the change caused by input e_j."""
    block = copy.deepcopy(model.visual.transformer.resblocks[layer]).double()
    attn = block.attn
    D = attn.out_proj.weight.shape[0]
    dh = D // attn.num_heads
    others = torch.ones(D, dtype=torch.bool)
    others[head * dh:(head + 1) * dh] = False
    block.ln_1 = torch.nn.Identity()
    with torch.no_grad():
        attn.in_proj_weight[2 * D:][others] = 0
        attn.in_proj_bias[2 * D:][others] = 0
        block.mlp.c_proj.weight.zero_()
        block.mlp.c_proj.bias.zero_()
        x = torch.cat([torch.zeros(1, D), torch.eye(D)]).double()[:, None, :].expand(D + 1, 3, D).contiguous()
        out = (block(x) - x)[:, 0]
    return (out[1:] - out[0]).numpy()


# ------------------------------------------------------------------------------------------------ kind 1

KIND1_CONFIGS = {
    "layerscale": {"ls_init_value": 0.1},  # the input (non-uniform gamma, both blocks)
    "head_scale": {"scale_heads": True},
    "qk_norm+layerscale+head_scale": {"qk_norm": True, "ls_init_value": 0.1, "scale_heads": True},
    "cosine+head_scale": {"scaled_cosine_attn": True, "scale_heads": True},
    "scale_fc+layerscale": {"scale_fc": True, "ls_init_value": 0.1},
}


@pytest.mark.parametrize("variant", sorted(KIND1_CONFIGS))
def test_kind1_decomposed_map_is_what_the_head_adds(variant, tmp_path, cosine_fix):
    model = _randomise_scales(_model(tmp_path, f"ws-k1-{variant}", seed=5, **KIND1_CONFIGS[variant]))
    w = describe_model(model)
    for layer in range(w.n_layers):
        for head in range(w.n_heads):
            truth = _module_head_map(model, layer, head)
            U, S, Vh = np.linalg.svd(truth)
            svd = decompose_head(w, layer, head)
            r = svd.rank
            assert r == w.layers[layer].attn.head_width
            assert np.allclose(svd.s, S[:r], rtol=1e-9, atol=0)
            gaps = np.minimum(-np.diff(S[:r], prepend=np.inf), -np.diff(S[:r + 1])[:r]) / S[0]
            sep = gaps > SEPARATED
            assert sep[:3].all(), "the planted scales leave the leading directions separated"
            assert np.all(np.abs(np.sum(svd.write * Vh[:r], axis=1))[sep] >= 1 - 1e-6)
            assert np.all(np.abs(np.sum(svd.read * U[:, :r].T, axis=1))[sep] >= 1 - 1e-6)


def test_kind1_the_check_sees_a_missing_scale(tmp_path):
    """The reference above is sensitive: the raw out_proj factor (no LayerScale) gives other directions."""
    model = _randomise_scales(_model(tmp_path, "ws-k1-sens", seed=5, ls_init_value=0.1))
    attn = model.visual.transformer.resblocks[0].attn
    D, dh = attn.out_proj.weight.shape[0], 16
    A = attn.in_proj_weight.detach()[2 * D:][:dh].double().T.numpy()
    B_raw = attn.out_proj.weight.detach()[:, :dh].double().T.numpy()
    _, S_raw, V_raw = np.linalg.svd(A @ B_raw)
    _, S, Vh = np.linalg.svd(_module_head_map(model, 0, 0))
    assert np.abs(np.sum(V_raw[:3] * Vh[:3], axis=1)).min() < 0.9
    assert not np.allclose(S_raw[:3], S[:3], rtol=1e-2)


FORWARD_CONFIGS = {
    **KIND1_CONFIGS,
    "qk_norm": {"qk_norm": True},
    "cosine": {"scaled_cosine_attn": True},
    "all-linear-options": {"ls_init_value": 0.1, "scale_heads": True, "qk_norm": True, "scale_fc": True},
}


@pytest.mark.parametrize("variant", sorted(FORWARD_CONFIGS))
def test_kind1_forward_and_edits_are_exact(variant, tmp_path, cosine_fix):
    model = _randomise_scales(_model(tmp_path, f"ws-k1f-{variant}", seed=6, **FORWARD_CONFIGS[variant]), seed=1)
    x = _images(model, 2)
    w = describe_model(model)
    assert _rel(encode_image(w, x.double().numpy()), _embed(model, x)) <= 1e-5
    edits = [Edit(0, 1, 0, 0.0), Edit(1, 2, 1, -0.5), Edit(1, 0, 0, 3.0)]
    edited_w = edit_weights(w, edits)
    edited = apply_edits(model, edits)
    assert _rel(_embed(edited, x), encode_image(edited_w, x.double().numpy())) <= 1e-5
    assert _rel(_embed(edited, x), _embed(model, x)) > 1e-3  # the edits did change the output
    # write-back divided the scales out: reading the edited module back gives the edited factors
    back = describe_model(edited)
    for layer in (0, 1):
        a, b = back.layers[layer].attn, edited_w.layers[layer].attn
        assert _rel(a.write_o, b.write_o) <= 1e-6 and _rel(a.bias_o, b.bias_o) <= 1e-6


def test_kind1_zero_scales_are_written_back(tmp_path):
    """A LayerScale coordinate of 0 and a head scale of 0 cannot be divided out: write-back keeps the module's
    own values there, and the edited model is still exactly the predicted one."""
    model = _randomise_scales(_model(tmp_path, "ws-k1-zero", seed=7, ls_init_value=0.1, scale_heads=True))
    with torch.no_grad():
        model.visual.transformer.resblocks[1].ls_1.gamma[[0, 5]] = 0
        model.visual.transformer.resblocks[1].attn.head_scale[3] = 0
    w = describe_model(model)
    assert decompose_head(w, 1, 3).dead
    edits = [Edit(1, 0, 0, 0.0), Edit(1, 1, 2, 2.0)]
    edited = apply_edits(model, edits)
    x = _images(model, 2)
    assert _rel(_embed(edited, x), encode_image(edit_weights(w, edits), x.double().numpy())) <= 1e-5
    assert torch.equal(edited.visual.transformer.resblocks[1].attn.out_proj.weight[[0, 5]],
                       model.visual.transformer.resblocks[1].attn.out_proj.weight[[0, 5]])
    with pytest.raises(WeightscopeError, match="layer 1 head 3 writes nothing"):
        apply_edits(model, [Edit(1, 3, 0, 0.0)])


# scale_attn_inner is described since issue 29 (one positive scalar per token; tests/test_eva.py)
@pytest.mark.parametrize("option, message", [("scale_attn", "ln_attn")])
def test_kind1_nonlinear_output_paths_are_still_refused(option, message, tmp_path):
    with pytest.raises(WeightscopeError, match=f"layer 0 uses .*{message}.*not linear"):
        describe_model(_model(tmp_path, f"ws-k1-{option}", **{option: True}))


def test_kind1_qk_decomposition_refused_when_logits_are_not_bilinear(tmp_path):
    w = describe_model(_model(tmp_path, "ws-k1-qkn", qk_norm=True))
    with pytest.raises(WeightscopeError, match="layer 0 normalises queries and keys"):
        decompose_head(w, 0, 0, kind="qk")
    assert decompose_head(w, 0, 0, kind="vo").rank == 16


# ------------------------------------------------------------------------------------------------ kind 3

def _pruned(tiny_model):
    """Layer 0 head 1 pruned (its out_proj columns zeroed); layer 1 head 2 of rank 2 (its values from 2 rows)."""
    model = copy.deepcopy(tiny_model)
    D, dh = 64, 16
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        model.visual.transformer.resblocks[0].attn.out_proj.weight[:, dh:2 * dh] = 0
        rows = model.visual.transformer.resblocks[1].attn.in_proj_weight[2 * D + 2 * dh:2 * D + 3 * dh]
        rows.copy_(torch.randn(dh, 2, generator=g) @ torch.randn(2, D, generator=g) / 8)
    return model


def test_kind3_dead_heads_and_rounding_directions_are_no_directions(tiny_model, tmp_path):
    model = _pruned(tiny_model)
    w = describe_model(model)
    dead, partial = decompose_head(w, 0, 1), decompose_head(w, 1, 2)
    assert dead.dead and dead.rank == 0 and dead.groups == []
    # the float32 rounding of the rank-2 factor leaves 14 singular values at ~1e-7 of the first: no directions
    assert partial.rank == 2 and partial.s[2] <= 1e-6 * partial.s[0] and partial.groups == []
    assert np.linalg.matrix_rank(_module_head_map(model, 1, 2), tol=1e-5 * partial.s[0]) == 2
    # a head scale of zero kills a head too, and a random head keeps every direction
    scaled = _model(tmp_path, "ws-k3-hs", scale_heads=True)
    with torch.no_grad():
        scaled.visual.transformer.resblocks[0].attn.head_scale[2] = 0
    ws = describe_model(scaled)
    assert decompose_head(ws, 0, 2).dead and decompose_head(ws, 0, 1).rank == 16
    with pytest.raises(WeightscopeError, match=r"layer 1 head 2 is out of range: the head has 2 directions"):
        apply_edits(model, [Edit(1, 2, 5, 0.0)])


def test_kind3_dead_head_is_reported_dead_not_explained(tiny_model, tmp_path):
    vocab = ["red", "blue", "green", "circle", "square", "triangle", "dog", "car", "tree", "house"]
    result = inspect_model(load_model(_pruned(tiny_model)), ConceptExplainer(vocab, k=3, cache_dir=tmp_path), progress=False)
    rep = result[0, 1]
    assert rep.dead and rep.directions == [] and rep.theme() == ""
    assert result[1, 2].explained("write") == [0, 1] and result[1, 2].explained("read") == [0, 1]
    assert result[1, 1].explained("write") == list(range(16))
    for head in result.heads.values():
        for d in head.directions:
            assert all(c != 0 for c in d.coefficients)
    text = result.summary()
    assert "L0  H1  dead: writes nothing" in text
    assert "L0  H1  theme" not in text and "[fid 0.00]" not in text
    data = json.loads(result.to_json())
    by_key = {(h["layer"], h["head"]): h for h in data["heads"]}
    assert by_key[0, 1]["dead"] is True and by_key[0, 1]["rank"] == 0 and by_key[1, 2]["rank"] == 2
    assert by_key[1, 1]["dead"] is False
    assert Inspection.from_dict(data)[0, 1].dead
    html = write_report(result, tmp_path / "r.html").read_text()
    assert "Layer 0, head 1 &mdash; dead (writes nothing)" in html
    assert "Layer 1, head 2 &mdash; dead" not in html
    # a selection of dead heads only: nothing to explain, still a report
    alone = inspect_model(load_model(_pruned(tiny_model)), ConceptExplainer(vocab, k=3, cache_dir=tmp_path), layers=[0], heads=[1], progress=False)
    assert alone[0, 1].dead and alone.summary().endswith("L0  H1  dead: writes nothing (no singular value above "
                                                         "rounding level)")


def test_kind3_empty_and_zero_weight_explanations_are_not_printed(tiny_model, tmp_path, monkeypatch):
    """The solver's raw output may hold padding (-1), exact zeros from the refit, coefficients that round to zero
    and empty explanations; none of them becomes a printed concept, and an empty one reads as such."""
    import weightscope.concepts.explainer as explainer_module

    def fake_explain(signals, dictionary, **_):
        n = 2 * len(signals)  # both signs: rows are +signals then -signals
        idx = np.tile(np.array([[3, 1, 2, -1]]), (n, 1))
        coef = np.tile(np.array([[0.5, 0.0, 4e-7, 0.0]]), (n, 1))
        idx[0], coef[0] = -1, 0.0  # first direction, + sign: nothing explains it
        coef[1, 1] = 0.003  # a small but real weight: printed as 0.003, not 0.00
        fid = np.full(n, 0.8)
        fid[0] = 0.0
        return Explanation(idx, coef, 1 - fid, fid, np.ones(n), "comp", True)

    monkeypatch.setattr(explainer_module, "explain", fake_explain)
    vocab = ["red", "blue", "green", "circle"]
    result = inspect_model(load_model(tiny_model), ConceptExplainer(vocab, k=2, cache_dir=tmp_path), layers=[0], heads=[0], progress=False)
    rep = result[0, 0]
    empty, small = rep.direction(0, "write", 1), rep.direction(1, "write", 1)
    assert empty.concepts == [] and empty.label() == "(no concept)"
    assert small.concepts == ["circle", "blue"] and small.coefficients == [0.5, 0.003]
    assert small.label() == "circle (0.50), blue (0.003)"
    assert all(d.concepts == ["circle"] for d in rep.directions if d not in (empty, small))
    text = result.summary()
    assert "w0 +: (no concept)\n" in text and "fid 0.00" not in text and "(0.00)" not in text
    html = write_report(result, tmp_path / "r.html").read_text()
    assert "(0.00)" not in html and "<td>(no concept)</td><td>-</td>" in html


def test_kind3_reports_read_older_json_without_rank():
    rep = HeadReport(0, 0, [0.0, 0.0], [], [])
    assert rep.dead and HeadReport(0, 0, [2.0, 1.0, 1e-20], [], []).rank == 2
    assert Direction(0, "write", 1, [], [], 0.0).fidelity_label() == "-"


# ------------------------------------------------------------------------------------------------ kind 4

KIND4_CASES = [
    # (parameter path under visual, index, value, expected message part)
    ("transformer.resblocks.1.attn.out_proj.weight", (5, 37), float("nan"),
     r"visual\.transformer\.resblocks\.1\.attn\.out_proj\.weight \(layer 1, head 2\) holds 1 NaN and 0 inf"),
    ("transformer.resblocks.0.attn.in_proj_weight", (2 * 64 + 3 * 16 + 4, 9), float("inf"),
     r"in_proj_weight \(layer 0, head 3, v part\) holds 0 NaN and 1 inf"),
    ("transformer.resblocks.0.attn.in_proj_bias", (20,), float("-inf"),
     r"in_proj_bias \(layer 0, head 1, q part\) holds 0 NaN and 1 inf"),
    ("transformer.resblocks.1.mlp.c_fc.weight", (0, 0), float("nan"), r"c_fc\.weight \(layer 1, not head-specific\)"),
    ("proj", (3, 3), float("nan"), r"non-finite weights: visual\.proj holds 1 NaN"),
]


@pytest.mark.parametrize("path, index, value, message", KIND4_CASES)
def test_kind4_non_finite_weights_are_named(tiny_model, tmp_path, path, index, value, message):
    model = copy.deepcopy(tiny_model)
    with torch.no_grad():
        model.visual.get_parameter(path)[index] = value
    with pytest.raises(WeightscopeError, match=message) as err:
        describe_model(model)
    assert "\n" not in str(err.value)
    with pytest.raises(WeightscopeError, match=message):  # before any SVD or embedding work
        inspect_model(load_model(model), ConceptExplainer(["red", "blue"], k=1, cache_dir=tmp_path), progress=False)
    with pytest.raises(WeightscopeError, match=message):
        apply_edits(model, [Edit(0, 0, 0, 0.0)])


def test_kind4_non_finite_scales_are_named(tmp_path):
    model = _model(tmp_path, "ws-k4-hs", scale_heads=True, ls_init_value=0.1)
    with torch.no_grad():
        model.visual.transformer.resblocks[0].attn.head_scale[2] = float("nan")
    with pytest.raises(WeightscopeError, match=r"head_scale \(layer 0, head 2\) holds 1 NaN"):
        describe_model(model)
    with torch.no_grad():
        model.visual.transformer.resblocks[0].attn.head_scale[2] = 1.0
        model.visual.transformer.resblocks[1].ls_1.gamma[7] = float("inf")
    with pytest.raises(WeightscopeError, match=r"ls_1\.gamma \(layer 1, not head-specific\) holds 0 NaN and 1 inf"):
        describe_model(model)


def test_kind4_non_finite_text_weights_are_named(tiny_model, tmp_path):
    """The concept dictionary comes from the text tower: a NaN there is named too, not found in the solver."""
    from weightscope.concepts.embed import embed_concepts

    model = copy.deepcopy(tiny_model)
    with torch.no_grad():
        model.transformer.resblocks[0].attn.in_proj_weight[32 + 20, 1] = float("nan")  # text width 32, 2 heads
    message = r"transformer\.resblocks\.0\.attn\.in_proj_weight \(text tower, layer 0, head 1, k part\) holds 1 NaN"
    with pytest.raises(WeightscopeError, match=message):
        embed_concepts(model, load_model(model).tokenizer, ["red", "blue"], progress=False, cache_dir=tmp_path)
    with pytest.raises(WeightscopeError, match=message):
        inspect_model(load_model(model), ConceptExplainer(["red", "blue"], k=1, cache_dir=tmp_path), progress=False)
