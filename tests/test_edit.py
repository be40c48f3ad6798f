"""Weight-space edits: exact by construction, saved checkpoints load in stock open_clip, inputs stay untouched."""
import copy
import hashlib
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from weightscope import WeightscopeError, describe_model, to_joint
from weightscope.decompose import decompose_head, head_factors
from weightscope.analyses.edit import (Edit, apply_edits, edit_weights, parse_edit, resolve_edits, save_checkpoint,
                              sha256_file, sidecar_path)
from weightscope.models.forward import encode_image
from weightscope.analyses.select import select_by_concepts, select_by_query, select_by_relevance
from weightscope.concepts.explainer import ConceptExplainer

from conftest import make_model, embed_images, max_rel_error, random_images


@pytest.fixture(autouse=True)
def _private_embedding_cache(monkeypatch, tmp_path_factory):
    """Concept embeddings cached under this session's temp folder, not the user's cache."""
    monkeypatch.setenv("WEIGHTSCOPE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "edit-embedding-cache"))


_images, _embed, _rel = random_images, embed_images, max_rel_error  # shared helpers (conftest)


EDITS = [Edit(0, 1, 0, 0.0), Edit(1, 2, 3, -1.0), Edit(1, 3, 2, 2.5), Edit(-1, 0, 5, 0.3)]


@pytest.fixture(scope="module")
def biased(asym_model):
    """The shared asymmetric model: LayerNorm gains 0.5-1.5, shifts and biases everywhere non-zero."""
    return asym_model


def test_edit_rescales_exactly_the_chosen_singular_values(biased):
    w = describe_model(biased)
    before = copy.deepcopy(w)
    for basis in ({}, {"fold_ln": True, "center_write": True}):
        w2 = edit_weights(w, EDITS, **basis)
        alphas = {}
        for e in resolve_edits(w, EDITS, **basis):
            for i in e.indices:
                alphas.setdefault((e.layer, e.head), {})[i] = e.alpha
        for layer in range(w.n_layers):
            for head in range(w.n_heads):
                svd = decompose_head(w, layer, head, **basis)
                factor = np.ones(svd.rank)
                for i, a in alphas.get((layer, head), {}).items():
                    factor[i] = a
                expect = (svd.read.T * (svd.s * factor)) @ svd.write
                A, B = head_factors(w2, layer, head, **basis)
                assert np.abs(A @ B - expect).max() <= 1e-12 * svd.s[0]
                if (layer, head) not in alphas:  # untouched heads are bit-identical
                    assert np.array_equal(w2.layers[layer].attn.write_o[head], w.layers[layer].attn.write_o[head])
                    assert np.array_equal(w2.layers[layer].attn.bias_v[head], w.layers[layer].attn.bias_v[head])
        # the constant a layer adds (value biases through the write factors plus the output bias) is kept
        for lw, lw2 in zip(w.layers, w2.layers):
            const = np.einsum("he,hed->d", lw.attn.bias_v, lw.attn.write_o) + lw.attn.bias_o
            const2 = np.einsum("he,hed->d", lw2.attn.bias_v, lw2.attn.write_o) + lw2.attn.bias_o
            assert np.allclose(const, const2, atol=1e-12)
    # the input description is untouched
    for lw, lb in zip(w.layers, before.layers):
        for name in ("read_v", "write_o", "bias_v", "bias_o"):
            assert np.array_equal(getattr(lw.attn, name), getattr(lb.attn, name))


def test_edited_model_matches_reference_forward_tiny(biased):
    state = {k: v.clone() for k, v in biased.state_dict().items()}
    x = _images(biased, 3)
    edited = apply_edits(biased, EDITS)
    predicted = encode_image(edit_weights(describe_model(biased), EDITS), x.double().numpy())
    assert _rel(_embed(edited, x), predicted) <= 1e-5
    assert _rel(_embed(edited, x), _embed(biased, x)) > 1e-2  # the edit did change the output
    # identity edits on every direction of every head (fold included) reproduce the model
    w = describe_model(biased)
    ident = [Edit(l, h, i, 1.0) for l in range(w.n_layers) for h in range(w.n_heads) for i in range(16)]
    assert _rel(_embed(apply_edits(biased, ident), x), _embed(biased, x)) <= 1e-6
    for k, v in biased.state_dict().items():  # the input model is untouched
        assert torch.equal(v, state[k]), k


def test_layerscale_model_is_exact_too(asym_ls_model):
    model = asym_ls_model
    x = _images(model, 2)
    predicted = encode_image(edit_weights(describe_model(model), EDITS), x.double().numpy())
    assert _rel(_embed(apply_edits(model, EDITS), x), predicted) <= 1e-5


def test_reference_forward_reproduces_the_asymmetric_models(asym_model, asym_ls_model):
    """The numpy forward the edit predictions rest on is exact where gains, shifts, biases and LayerScale matter."""
    for model in (asym_model, asym_ls_model):
        x = _images(model, 2, seed=3)
        assert _rel(encode_image(describe_model(model), x.double().numpy()), _embed(model, x)) <= 1e-5


def _raw_attention(model, layer):
    """From the torch module's raw parameters (no weightscope code): per-head W_VO (H, D, D) with x @ W_VO[h] the
    head's value-output map, the constant the layer adds (sum_h b_v[h] W_o[h] + b_o), and the q/k rows."""
    attn = model.visual.transformer.resblocks[layer].attn
    D, H = attn.embed_dim, attn.num_heads
    dh = D // H
    W = attn.in_proj_weight.detach().double().numpy()
    b = attn.in_proj_bias.detach().double().numpy()
    Wo = attn.out_proj.weight.detach().double().numpy()
    cols = [slice(h * dh, (h + 1) * dh) for h in range(H)]
    vo = np.stack([W[2 * D:][c].T @ Wo[:, c].T for c in cols])
    const = sum(b[2 * D:][c] @ Wo[:, c].T for c in cols) + attn.out_proj.bias.detach().double().numpy()
    return vo, const, W[:2 * D], b[:2 * D]


def _expected_vo(vo, edits, layer, head):
    """The edited W_VO from torch's dense SVD of the raw matrix: W + sum_i (alpha_i - 1) s_i u_i v_i^T."""
    U, S, Vh = (t.numpy() for t in torch.linalg.svd(torch.from_numpy(vo)))
    out = vo.copy()
    for e in edits:
        if (e.layer % 2, e.head) == (layer, head):
            out += (e.alpha - 1.0) * S[e.index] * np.outer(U[:, e.index], Vh[e.index])
    return out


def test_edit_matches_a_dense_reference_built_from_raw_parameters(biased):
    """Edit exactness against torch's dense SVD of the raw parameters, and the output of a model written by
    this test's own least-squares write-back: neither side uses edit_weights, decompose or the adapter."""
    edited = apply_edits(biased, EDITS)
    reference = copy.deepcopy(biased)
    touched = {(e.layer % 2, e.head) for e in EDITS}
    for layer in range(2):
        vo, const, qk, qk_bias = _raw_attention(biased, layer)
        vo2, const2, qk2, qk_bias2 = _raw_attention(edited, layer)
        np.testing.assert_allclose(const2, const, atol=1e-5)  # the bias fold keeps the constant
        np.testing.assert_allclose(qk2, qk, atol=1e-7)  # queries and keys untouched
        np.testing.assert_allclose(qk_bias2, qk_bias, atol=1e-7)
        ref_attn = reference.visual.transformer.resblocks[layer].attn
        dh = vo.shape[1] // vo.shape[0]
        for head in range(vo.shape[0]):
            expect = _expected_vo(vo[head], EDITS, layer, head)
            scale = np.linalg.norm(vo[head], 2)
            assert np.abs(vo2[head] - expect).max() <= 1e-5 * scale
            if (layer, head) in touched:
                assert np.abs(vo2[head] - vo[head]).max() > 1e-2 * scale
                # write the expected map into the reference: W_o[h] = lstsq(W_v[h]^T, W'), bias folded by hand
                c = slice(head * dh, (head + 1) * dh)
                with torch.no_grad():
                    Wv = ref_attn.in_proj_weight[2 * vo.shape[1]:][c].double().numpy().T  # (D, dh)
                    new_wo = np.linalg.lstsq(Wv, expect, rcond=None)[0]  # (dh, D)
                    bv = ref_attn.in_proj_bias[2 * vo.shape[1]:][c]
                    ref_attn.out_proj.bias += bv @ ref_attn.out_proj.weight[:, c].T
                    bv.zero_()
                    ref_attn.out_proj.weight[:, c] = torch.from_numpy(new_wo.T)
    x = _images(biased, 3, seed=11)
    assert _rel(_embed(edited, x), _embed(reference, x)) <= 1e-5
    assert _rel(_embed(reference, x), _embed(biased, x)) > 1e-2


def _check_vit_b16(model, weights, edits, n_layers, n_images):
    """Edit the full model, then compare its first ``n_layers`` blocks (the numpy forward is the slow part)."""
    x = _images(model, n_images)
    short = copy.copy(weights)
    short.layers = weights.layers[:n_layers]

    def truncated(m):
        m.visual.transformer.resblocks = m.visual.transformer.resblocks[:n_layers]  # m is our own copy
        return m

    edited = truncated(apply_edits(model, edits, weights=weights))
    assert _rel(_embed(edited, x), encode_image(edit_weights(short, edits), x.double().numpy())) <= 1e-5
    # identity edits (bias fold included) reproduce the unedited model, all blocks
    same = apply_edits(model, [Edit(e.layer, e.head, e.index, 1.0) for e in edits], weights=weights)
    assert _rel(_embed(same, x), _embed(model, x)) <= 1e-6
    assert _rel(_embed(edited, x), _embed(truncated(same), x)) > 1e-3  # the edit changed the output


def test_edited_vit_b16_matches_reference_forward(vit_b16, vit_b16_weights):
    """ViT-B-16 (random init), first 3 blocks, one image."""
    _check_vit_b16(vit_b16, vit_b16_weights, [Edit(0, 3, 0, 0.0), Edit(1, 7, 1, -0.5), Edit(2, 11, 0, 3.0),
                                               Edit(2, 2, 10, 0.0)], n_layers=3, n_images=1)


@pytest.mark.slow
def test_edited_vit_b16_all_layers(vit_b16, vit_b16_weights):
    _check_vit_b16(vit_b16, vit_b16_weights, [Edit(0, 3, 0, 0.0), Edit(5, 7, 1, -0.5), Edit(11, 11, 0, 3.0),
                                               Edit(11, 2, 10, 0.0)], n_layers=12, n_images=2)


def test_degenerate_group_is_edited_as_a_whole(tiny_model):
    w = describe_model(tiny_model)
    attn = w.layers[1].attn
    D, dh = attn.read_v.shape[1:]
    rng = np.random.default_rng(0)
    Qa = np.linalg.qr(rng.normal(size=(D, dh)))[0]
    Qb = np.linalg.qr(rng.normal(size=(D, dh)))[0]
    s = np.linspace(3, 1, dh)
    s[2] = s[1]  # a tie: only the span of directions 1 and 2 is defined
    attn.read_v[0], attn.write_o[0] = Qa, (Qb * s).T
    (e,) = resolve_edits(w, [Edit(1, 0, 2, 0.0)])
    assert e.indices == (1, 2)
    w2 = edit_weights(w, [Edit(1, 0, 2, 0.0)])
    assert np.allclose(decompose_head(w2, 1, 0).s, np.sort(np.r_[s[[0]], s[3:], 0, 0])[::-1], atol=1e-12)
    assert resolve_edits(w, [Edit(1, 0, 2, 0.0)], expand_groups=False)[0].indices == (2,)
    single = resolve_edits(w, (e for e in [Edit(-1, -4, 4, 0.5)]))[0]  # any iterable; a lone index stays an int
    assert (single.layer, single.head, single.index) == (1, 0, 4) and isinstance(single.index, int)


def test_apply_edits_widens_groups_and_keeps_the_wrapper(tiny_model):
    """apply_edits edits a degenerate group as a whole by default, and returns a LoadedModel for a LoadedModel."""
    from weightscope import load_model
    from weightscope.models.adapters import write_attention

    model = copy.deepcopy(tiny_model)
    w = describe_model(model)
    attn = w.layers[1].attn
    D, dh = attn.read_v.shape[1:]
    rng = np.random.default_rng(1)
    Qa, Qb = (np.linalg.qr(rng.normal(size=(D, dh)))[0] for _ in range(2))
    s = np.linspace(3, 1, dh)
    s[2] = s[1]
    attn.read_v[0], attn.write_o[0] = Qa, (Qb * s).T
    write_attention(model, 1, attn)
    edited = describe_model(apply_edits(model, [Edit(1, 0, 2, 0.0)]))
    assert np.allclose(decompose_head(edited, 1, 0).s, np.sort(np.r_[s[[0]], s[3:], 0, 0])[::-1], atol=1e-6)
    one = describe_model(apply_edits(model, [Edit(1, 0, 2, 0.0)], expand_groups=False))
    assert np.sum(decompose_head(one, 1, 0).s < 1e-6) == 1
    loaded = load_model(model)
    out = apply_edits(loaded, [Edit(0, 0, 0, 0.0)])
    assert out.source == f"{loaded.source}+edited" and out.model is not loaded.model
    assert decompose_head(describe_model(out.model), 0, 0).s[-1] < 1e-6


# ------------------------------------------------------------------------------------ checkpoints


def test_saved_checkpoint_loads_in_stock_open_clip(tiny_name, biased, tmp_path):
    import open_clip

    edited = apply_edits(biased, EDITS)
    path, side = save_checkpoint(edited, tmp_path / "e.safetensors", metadata={"note": "t"})
    assert side == sidecar_path(path) and side.name == "e.safetensors.json"
    loaded = open_clip.create_model(tiny_name, pretrained=str(path)).eval()
    x = _images(biased, 2)
    assert np.array_equal(_embed(loaded, x), _embed(edited, x))
    meta = json.loads(side.read_text())
    assert meta["note"] == "t" and meta["checkpoint_sha256"] == sha256_file(path)
    # never overwritten unless asked; the input checkpoint never, even when asked
    with pytest.raises(WeightscopeError, match="already exists"):
        save_checkpoint(edited, path)
    path.unlink()
    with pytest.raises(WeightscopeError, match="already exists"):  # the sidecar alone also blocks
        save_checkpoint(edited, path)
    save_checkpoint(edited, path, overwrite=True)
    with pytest.raises(WeightscopeError, match="input checkpoint"):
        save_checkpoint(edited, path, overwrite=True, protect=[path])
    with pytest.raises(WeightscopeError, match=r"\.safetensors"):
        save_checkpoint(edited, tmp_path / "e.pt")


def _one_error_line(err, message):
    """stderr holds exactly one error line (progress bars aside) and it names the problem."""
    lines = [l for l in err.splitlines() if l.startswith("weightscope edit: error:")]
    return len(lines) == 1 and message in lines[0]


def _cli(argv, capsys):
    from weightscope.cli import main

    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_edit_from_checkpoint_keeps_input_and_saves_loadable_model(tiny_name, biased, tmp_path, capsys):
    import open_clip
    from safetensors.torch import save_file

    src = tmp_path / "in.safetensors"
    save_file({k: v.contiguous() for k, v in biased.state_dict().items()}, str(src))
    digest = sha256_file(src)
    out = tmp_path / "out.safetensors"
    rc, text, _ = _cli(["edit", tiny_name, "--checkpoint", str(src), "--direction", "1:2:3=0.5",
                        "--direction", "0:0:0", "--out", str(out)], capsys)
    assert rc == 0 and "L1.H2.#3" in text and str(out) in text
    assert sha256_file(src) == digest
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["source"]["checkpoint_sha256"] == digest
    edits = [Edit.from_dict(d) for d in meta["edits"]]
    assert [(e.layer, e.head, e.alpha) for e in edits] == [(1, 2, 0.5), (0, 0, 0.0)]
    x = _images(biased, 2)
    reloaded = open_clip.create_model(tiny_name, pretrained=str(out)).eval()
    assert np.array_equal(_embed(reloaded, x), _embed(apply_edits(biased, edits), x))
    # a second run refuses to overwrite; writing over the input is refused even with --overwrite
    rc, _, err = _cli(["edit", tiny_name, "--checkpoint", str(src), "--direction", "0:0:0", "--out", str(out)], capsys)
    assert rc == 2 and _one_error_line(err, "already exists")
    rc, _, err = _cli(["edit", tiny_name, "--checkpoint", str(src), "--direction", "0:0:0", "--out", str(src),
                       "--overwrite"], capsys)
    assert rc == 2 and "input checkpoint" in err
    assert sha256_file(src) == digest


@pytest.mark.parametrize("argv, message", [
    (["--direction", "9:0:0"], "layer 9 is out of range"),
    (["--direction", "0:7:0"], "head 7 is out of range"),
    (["--direction", "0:0:16"], "singular index 16"),
    (["--direction", "0:0"], "LAYER:HEAD:INDEX"),
    (["--direction", "0:0:0=abc"], "not a number"),
    (["--direction", "0:0:0", "--alpha", "nan"], "finite"),
    (["--suppress", "red", "--alpha", "1.5"], "below 1"),
    (["--amplify", "red", "--alpha", "0.5"], "above 1"),
    (["--suppress", "red", "--layers", "x"], "--layers"),
    (["--suppress", "red", "--layers", "5"], "layer 5 is out of range"),
    (["--suppress", "red", "--threshold", "2"], "no direction scored"),
    (["--suppress", "red", "--top", "0"], "at least 1"),
])
def test_cli_bad_input_is_one_line_exit_2(tiny_name, tmp_path, capsys, argv, message):
    rc, _, err = _cli(["edit", tiny_name, *argv, "--vocab", "none", "--out", str(tmp_path / "o.safetensors")], capsys)
    assert rc == 2 and _one_error_line(err, message)
    assert not (tmp_path / "o.safetensors").exists()


def test_cli_dry_run_saves_nothing(tiny_name, tmp_path, capsys):
    """Kind 4: --dry-run lists the chosen directions and writes neither the checkpoint nor its record."""
    out = tmp_path / "dry.safetensors"
    rc, text, _ = _cli(["edit", tiny_name, "--direction", "1:2:0=0.5", "--dry-run", "--out", str(out)], capsys)
    assert rc == 0 and "L1.H2.#0" in text and "nothing saved" in text
    assert not out.exists() and not sidecar_path(out).exists() and list(tmp_path.iterdir()) == []
    rc, text, _ = _cli(["edit", tiny_name, "--direction", "0:0:0", "--dry-run"], capsys)  # no --out needed
    assert rc == 0 and "nothing saved" in text and list(tmp_path.iterdir()) == []


def test_bad_edits_raise(tiny_model):
    w = describe_model(tiny_model)
    for bad, msg in [(Edit(2, 0, 0, 0.0), "layer 2 is out of range"), (Edit(0, 4, 0, 0.0), "head 4"),
                     (Edit(0, 0, 16, 0.0), "singular index 16"), (Edit(0, 0, -1, 0.0), "singular index -1"),
                     (Edit(0, 0, 0, float("inf")), "finite"), (Edit(0, 0, 0, "0"), "real number"),
                     (Edit(0, 0, 0, True), "real number"), (Edit(0, 0, (), 0.0), "no singular index")]:
        with pytest.raises(WeightscopeError, match=msg):
            edit_weights(w, [bad])
    with pytest.raises(WeightscopeError, match="conflicting"):
        edit_weights(w, [Edit(0, 0, 1, 0.0), Edit(0, 0, 1, 2.0)])
    with pytest.raises(WeightscopeError, match="Edit records"):
        edit_weights(w, [(0, 0, 1, 0.0)])
    assert parse_edit("3:1:4+5=-0.5") == Edit(3, 1, (4, 5), -0.5, "explicit")
    assert parse_edit("-1.0.2", alpha=2.0).alpha == 2.0


# ------------------------------------------------------------------------------------ selection


def _plant(weights, layer, head, target, seed=0):
    """Rebuild one head so that its top write direction (singular value 50, the rest <= 1) has joint image
    ``target`` (E,): W = Qa diag(s) Vt with Vt's first row v, and B = R^-1 diag(s) Vt keeps A = Qa R."""
    ln, P = weights.ln_post, np.eye(weights.width) - 1.0 / weights.width
    v = np.linalg.lstsq(((P * ln.scale) @ weights.proj).T, target, rcond=None)[0]  # (gamma * P v) @ proj = target
    attn = weights.layers[layer].attn
    D, dh = attn.read_v[head].shape
    rng = np.random.default_rng(seed)
    Vt = np.linalg.qr(np.column_stack([v, rng.normal(size=(D, dh - 1))]))[0].T  # (dh, D), row 0 = v/|v|
    s = np.r_[50.0, np.linspace(1.0, 0.5, dh - 1)]
    R = np.linalg.qr(attn.read_v[head])[1]
    attn.write_o[head] = np.linalg.solve(R, s[:, None] * Vt)


def test_select_by_query_finds_a_planted_direction(tiny_name, tiny_model):
    import open_clip
    from weightscope.models.adapters import write_attention
    from weightscope.analyses.select import embed_texts

    tok = open_clip.get_tokenizer(tiny_name)
    model = copy.deepcopy(tiny_model)
    w = describe_model(model)
    q = embed_texts(model, ["blue background"], tok)[0]
    _plant(w, 1, 2, -q)  # the head writes -v: both signs count
    write_attention(model, 1, w.layers[1].attn)
    w = describe_model(model)
    cos = to_joint(w, decompose_head(w, 1, 2).write[0]) @ q
    assert np.isclose(abs(cos), 1.0, atol=1e-6)

    (best,) = select_by_query(model, "blue background", tokenizer=tok, top=1, progress=False)
    assert (best.layer, best.head, best.index) == (1, 2, 0) and best.score > 1 - 1e-6 and best.alpha == 0.0
    assert ("-v" if cos < 0 else "+v") in best.reason
    # scores are |cos| between each direction's joint image and the query, sorted best first
    every = select_by_query(model, ["blue background"], tokenizer=tok, threshold=-1.0, progress=False)
    assert len(every) == 2 * 4 * 16 - sum(len(g) - 1 for l in range(2) for h in range(4)
                                          for g in decompose_head(w, l, h).groups)
    assert [e.score for e in every] == sorted((e.score for e in every), reverse=True)
    e = next(e for e in every if len(e.indices) == 1 and (e.layer, e.head) != (1, 2))
    expect = abs(to_joint(w, decompose_head(w, e.layer, e.head).write[e.index]) @ q)
    assert np.isclose(e.score, expect, atol=1e-6)
    # threshold keeps exactly the scores above it; a layer restriction excludes the planted head
    assert [x.score for x in select_by_query(model, "blue background", tokenizer=tok, threshold=0.3,
                                             progress=False)] == [x.score for x in every if x.score >= 0.3]
    other = select_by_query(model, "blue background", tokenizer=tok, top=3, layers=[0], progress=False)
    assert len(other) == 3 and all(x.layer == 0 for x in other)


def test_select_by_explanation_scores_the_reconstruction(tiny_name, tiny_model):
    import open_clip

    tok = open_clip.get_tokenizer(tiny_name)
    vocab = ["blue background", "green background", "circle", "square", "red", "star"]
    top = select_by_query(tiny_model, "blue background", explainer=ConceptExplainer(vocab), tokenizer=tok, by="explanation", top=3, layers=[1], heads=[0], progress=False)
    assert len(top) == 3 and all("explained as" in e.reason for e in top)
    assert all(-1 <= e.score <= 1 + 1e-9 for e in top)
    with pytest.raises(WeightscopeError, match="vocabulary"):
        select_by_query(tiny_model, "x", tokenizer=tok, by="explanation")
    with pytest.raises(WeightscopeError, match="queries"):
        select_by_query(tiny_model, [""], tokenizer=tok)
    with pytest.raises(WeightscopeError, match="top"):
        select_by_query(tiny_model, "x", tokenizer=tok, top=0)


def _fake_inspection():
    D = SimpleNamespace
    dirs = {
        (0, 1): [D(index=0, side="write", sign=1, concepts=["blue background", "circle"], coefficients=[0.6, 0.2]),
                 D(index=0, side="write", sign=-1, concepts=["square"], coefficients=[0.5]),
                 D(index=2, side="read", sign=1, concepts=["blue background"], coefficients=[0.9])],
        (1, 3): [D(index=4, side="write", sign=1, concepts=["green background", "Blue Background"],
                   coefficients=[0.3, 0.1])],
    }
    return SimpleNamespace(heads={k: SimpleNamespace(directions=v) for k, v in dirs.items()})


def test_select_by_concepts_and_relevance():
    insp = _fake_inspection()
    got = select_by_concepts(insp, ["blue background"], alpha=0.2)
    assert [(e.layer, e.head, e.index, e.alpha) for e in got] == [(0, 1, 0, 0.2), (1, 3, 4, 0.2)]
    assert [e.score for e in got] == pytest.approx([0.6, 0.1])
    both = select_by_concepts(insp, ["blue background"], sides=("write", "read"))
    assert [(e.layer, e.head, e.index) for e in both] == [(0, 1, 2), (0, 1, 0), (1, 3, 4)]
    assert select_by_concepts(insp, ["nothing"]) == []

    # embeddings by construction: each text a unit vector with known cosines
    basis = {"circle": [1, 0, 0], "square": [0, 1, 0], "blue background": [0, 0, 1], "green background": [0, 0.6, 0.8],
             "Blue Background": [0, 0, 1], "a round thing": [0.8, 0.6, 0]}
    got = select_by_relevance(insp, ["a round thing"], embed=lambda texts: np.array([basis[t] for t in texts]))
    by_key = {(e.layer, e.head, e.index): e for e in got}
    # (0,1,0): sign + R = 0.6*0 + 0.2*0.8 = 0.16, sign - R = 0.5*0.6 = 0.30 -> the larger, alpha max(0.8, 0.6)
    assert by_key[0, 1, 0].score == pytest.approx(0.30) and by_key[0, 1, 0].alpha == pytest.approx(0.8)
    # (1,3,4): R = 0.3*0.36 + 0.1*0 = 0.108 -> alpha 0.8
    assert by_key[1, 3, 4].score == pytest.approx(0.108) and by_key[1, 3, 4].alpha == pytest.approx(0.8)
    boosted = select_by_relevance(insp, ["a round thing"], embed=lambda t: np.array([basis[x] for x in t]), floor=0.0,
                                  offset=0.9)
    assert {(e.layer, e.head, e.index): e.alpha for e in boosted}[0, 1, 0] == pytest.approx(1.2)
    with pytest.raises(WeightscopeError, match="Inspection"):
        select_by_concepts(SimpleNamespace(), ["x"])


def _by_hand_predictions(model, tok, x, classes, templates):
    """Zero-shot predictions computed here from encode_text / encode_image (float64), not through zeroshot."""
    with torch.no_grad():
        rows = []
        for c in classes:
            feats = model.encode_text(tok([tp.format(c) for tp in templates])).double()
            t = torch.nn.functional.normalize(feats, dim=-1)
            rows.append(torch.nn.functional.normalize(t.mean(0), dim=0))
        img = torch.nn.functional.normalize(model.encode_image(x).double(), dim=-1)
    scores = (img @ torch.stack(rows).T).numpy()
    return scores.argmax(1), scores


def test_evaluate_edit_reports_before_after_and_change(tiny_name, tiny_model):
    import open_clip
    from weightscope.analyses.edit import evaluate_edit

    tok = open_clip.get_tokenizer(tiny_name)
    x = _images(tiny_model, 12, seed=5)
    labels = np.arange(12) % 3
    groups = np.array(["a", "b"] * 6)
    classes, templates = ["circle", "square", "star"], ["a {}", "a photo of a {}"]
    edited = copy.deepcopy(tiny_model)  # a negated projection negates every image-class cosine
    with torch.no_grad():
        edited.visual.proj.neg_()
    res = evaluate_edit(tiny_model, edited, tok, x, labels, classes, templates, groups=groups)
    before, scores = _by_hand_predictions(tiny_model, tok, x, classes, templates)
    after, _ = _by_hand_predictions(edited, tok, x, classes, templates)
    assert np.array_equal(after, scores.argmin(1))  # hand-derived: the negation turns argmax into argmin
    for key, pred in (("before", before), ("after", after)):
        assert np.array_equal(res[key]["predictions"], pred)
        correct = pred == labels
        assert res[key]["accuracy"] == pytest.approx(correct.mean())
        assert res[key]["groups"] == pytest.approx({"a": correct[::2].mean(), "b": correct[1::2].mean()})
    assert not np.array_equal(before, after)
    acc_b, acc_a = (before == labels).mean(), (after == labels).mean()
    assert res["change"]["accuracy"] == pytest.approx(acc_a - acc_b)
    for g, sl in (("a", slice(0, None, 2)), ("b", slice(1, None, 2))):
        assert res["change"]["groups"][g] == pytest.approx((after[sl] == labels[sl]).mean()
                                                           - (before[sl] == labels[sl]).mean())
    worst = lambda p: min((p[::2] == labels[::2]).mean(), (p[1::2] == labels[1::2]).mean())  # noqa: E731
    assert res["change"]["worst_accuracy"] == pytest.approx(worst(after) - worst(before))


# ------------------------------------------------------------------------------------ the bundled model


def test_bundled_model_edit_is_exact_and_saves_loadable_checkpoint(tmp_path, capsys):
    import open_clip
    from weightscope import load_model
    from weightscope.shapes import bundled, world
    from weightscope.shapes.evaluate import images_to_tensor

    loaded = load_model()
    source = bundled.checkpoint_path("base")
    digest = sha256_file(source)
    x = images_to_tensor(world.single_objects(4, seed=7)[0])
    edits = select_by_query(loaded, ["blue background", "green background"], explainer=ConceptExplainer("shapes_world"), top=6, progress=False) + [Edit(0, 1, 2, -1.0), Edit(2, 3, 0, 2.0)]
    edited = apply_edits(loaded, edits)
    assert edited.source == "bundled:base+edited" and edited.model is not loaded.model
    predicted = encode_image(edit_weights(describe_model(loaded), edits), x.double().numpy())
    assert _rel(_embed(edited.model, x), predicted) <= 1e-5
    assert _rel(_embed(edited.model, x), _embed(loaded.model, x)) > 1e-3
    same = apply_edits(loaded, [Edit(e.layer, e.head, e.index, 1.0) for e in edits])
    assert _rel(_embed(same.model, x), _embed(loaded.model, x)) <= 1e-6
    # the CLI's checkpoint loads in stock open_clip and matches the in-memory edit; the bundled file is untouched
    out = tmp_path / "bundled-edited.safetensors"
    rc, text, _ = _cli(["edit", "--suppress", "blue background", "--suppress", "green background", "--top", "6",
                        "--out", str(out)], capsys)
    assert rc == 0 and "L" in text and "sigma" in text
    meta = json.loads(sidecar_path(out).read_text())
    cli_edits = [Edit.from_dict(d) for d in meta["edits"]]
    assert [(e.layer, e.head, e.indices) for e in cli_edits] == [(e.layer, e.head, e.indices) for e in
                                                                 resolve_edits(describe_model(loaded), edits[:6])]
    bundled.register()
    reloaded = open_clip.create_model(bundled.MODEL_NAME, pretrained=str(out)).eval()
    assert np.array_equal(_embed(reloaded, x), _embed(apply_edits(loaded, cli_edits).model, x))
    assert sha256_file(source) == digest == meta["source"]["checkpoint_sha256"]


def test_cli_edit_by_concept_from_saved_or_fresh_inspection(tiny_name, tmp_path, capsys):
    """--concept edits exactly the directions whose explanation names the concept, from inspection.json or now."""
    from safetensors.torch import save_file

    from weightscope.analyses.inspection import Inspection

    # a checkpoint file, so that every call sees the same weights (a random-init load draws new ones)
    ckpt = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in make_model(tiny_name, seed=3).state_dict().items()}, str(ckpt))
    vocab = tmp_path / "v.txt"
    vocab.write_text("\n".join(["red", "green", "blue", "circle", "square", "dog", "cat", "tree", "car", "house",
                                "water", "sky", "stripes", "dots", "metal", "wood"]))
    rc, _, _ = _cli(["inspect", tiny_name, "--checkpoint", str(ckpt), "--vocab", str(vocab), "--layers", "1", "--out", str(tmp_path / "ins")],
                    capsys)
    assert rc == 0
    ins_path = tmp_path / "ins" / "inspection.json"
    inspection = Inspection.from_json(ins_path)
    concept = inspection[1, 0].direction(0, "write", 1).concepts[0]
    naming = {(l, h, d.index) for (l, h), rep in inspection.heads.items() for d in rep.directions
              if d.side == "write" and concept in d.concepts}

    outs = {}
    for how, extra in (("saved", ["--inspection", str(ins_path)]), ("fresh", ["--vocab", str(vocab)])):
        out = tmp_path / f"{how}.safetensors"
        rc, text, _ = _cli(["edit", tiny_name, "--checkpoint", str(ckpt), "--concept", concept, "--layers", "1", "--threshold", "0",
                            *extra, "--out", str(out)], capsys)
        assert rc == 0 and f"explained by '{concept}'" in text
        meta = json.loads(sidecar_path(out).read_text())
        assert meta["selection"]["mode"] == "concept" and meta["selection"]["concepts"] == [concept]
        outs[how] = {(e["layer"], e["head"], tuple(e["index"]) if isinstance(e["index"], list) else e["index"])
                     for e in meta["edits"]}
        assert all(e["alpha"] == 0.0 for e in meta["edits"])
    assert outs["saved"] == outs["fresh"] == naming  # same explanations, same choice; all of them

    def err_of(*argv):
        rc, _, err = _cli(["edit", tiny_name, "--checkpoint", str(ckpt), *argv, "--out", str(tmp_path / "x.safetensors")], capsys)
        assert rc == 2
        return err

    assert _one_error_line(err_of("--concept", "no such thing", "--inspection", str(ins_path)), "no explained direction")
    assert _one_error_line(err_of("--concept", concept[:-1] + "#", "--inspection", str(ins_path)), repr(concept))
    assert _one_error_line(err_of("--suppress", "red", "--inspection", str(ins_path)), "only serves --concept")
    assert _one_error_line(err_of("--concept", concept, "--vocab", "none"), "needs a vocabulary")
    assert _one_error_line(err_of("--concept", concept, "--alpha", "1", "--inspection", str(ins_path)), "unchanged")
    other = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in make_model(tiny_name, seed=5).state_dict().items()}, str(other))
    rc, _, err = _cli(["edit", tiny_name, "--checkpoint", str(other), "--concept", concept, "--inspection",
                       str(ins_path), "--out", str(tmp_path / "x.safetensors")], capsys)
    assert rc == 2 and _one_error_line(err, "not the model being edited")
    assert not (tmp_path / "x.safetensors").exists()
