"""MLP neurons and query-key circuits explained data-free (weightscope.analyses.neurons), and exact neuron edits."""
import copy

import numpy as np
import pytest
import torch
from conftest import embed_images, max_rel_error, random_images

from weightscope.concepts.explainer import ConceptExplainer
from weightscope import WeightscopeError, describe_model, to_joint
from weightscope.analyses.edit import NeuronEdit, apply_neuron_edits, edit_neuron_weights, save_checkpoint
from weightscope.models.forward import encode_image
from weightscope.analyses.neurons import (explain_neurons, explain_qk, joint_preimage, neuron_scores, neuron_vectors,
                                 position_ratio)


def _dictionary(E, M=300, seed=0):
    rng = np.random.default_rng(seed)
    D = rng.normal(size=(M, E))
    return D / np.linalg.norm(D, axis=1, keepdims=True), [f"concept {i}" for i in range(M)]


_images, _embed, _rel = random_images, embed_images, max_rel_error  # shared helpers (conftest)


def test_neuron_vectors_and_scores_match_the_torch_module(tiny_model):
    w = describe_model(tiny_model)
    blk = tiny_model.visual.transformer.resblocks[1]
    write, read = neuron_vectors(w, 1)
    assert np.allclose(write, blk.mlp.c_proj.weight.detach().double().numpy().T)
    gamma = blk.ln_2.weight.detach().double().numpy()
    assert np.allclose(read, blk.mlp.c_fc.weight.detach().double().numpy() * gamma)
    # score by hand: ln_post's centring and scale, then proj, norm; times the read vector's norm
    ln = tiny_model.visual.ln_post.weight.detach().double().numpy()
    proj = tiny_model.visual.proj.detach().double().numpy()
    i = 7
    v = write[i]
    expected = np.linalg.norm(((v - v.mean()) * ln) @ proj) * np.linalg.norm(read[i])
    assert np.isclose(neuron_scores(w, 1)[0][i], expected, rtol=1e-10)


def test_planted_neuron_is_explained_by_its_concept(tiny_model):
    w = copy.deepcopy(describe_model(tiny_model))
    D_, concepts = _dictionary(w.embed_dim)
    target = 42
    pre = joint_preimage(w, D_[target])
    assert np.allclose(to_joint(w, pre), D_[target], atol=1e-9)  # the pre-image maps back onto the concept
    w.layers[0].mlp_out[5] = 3.0 * pre / np.linalg.norm(pre)
    reps = explain_neurons(w, D_, ConceptExplainer(concepts), layers=[0], progress=False)
    d = reps[0, 5].direction("write", 1)
    assert d.concepts[0] == concepts[target] and d.fidelity > 0.99
    assert reps[0, 5].direction("write", -1).concepts[:1] != [concepts[target]]
    ranks = sorted(r.rank for r in reps.values())
    assert ranks == list(range(w.layers[0].mlp_out.shape[0]))
    # leading n only, best score first
    top = explain_neurons(w, D_, ConceptExplainer(concepts), layers=[0], n_neurons=3, sides=("write",), progress=False)
    scores = neuron_scores(w, 0)[0]
    assert sorted(i for _, i in top) == sorted(np.argsort(-scores)[:3].tolist())
    with pytest.raises(WeightscopeError, match="n_neurons"):
        explain_neurons(w, D_, ConceptExplainer(concepts), n_neurons=0)
    with pytest.raises(WeightscopeError, match="sides"):
        explain_neurons(w, D_, ConceptExplainer(concepts), sides=("out",))


def test_planted_qk_head_is_explained_on_the_right_sides(tiny_model):
    w = copy.deepcopy(describe_model(tiny_model))
    D_, concepts = _dictionary(w.embed_dim, seed=1)
    qa, kb = 11, 99
    a = joint_preimage(w, D_[qa])
    b = joint_preimage(w, D_[kb])
    attn = w.layers[1].attn
    attn.read_q[2] = 0.0
    attn.read_k[2] = 0.0
    attn.read_q[2][:, 0] = 2.0 * a / np.linalg.norm(a)
    attn.read_k[2][:, 0] = b / np.linalg.norm(b)
    rep = explain_qk(w, D_, ConceptExplainer(concepts), layers=[1], heads=[2], progress=False)[1, 2]
    assert rep.rank == 1 and np.isclose(rep.s[0], 2.0)
    # the SVD's sign is arbitrary, but the query and key signs flip together
    sign = 1 if rep.direction(0, "query", 1).concepts[0] == concepts[qa] else -1
    q, k = rep.direction(0, "query", sign), rep.direction(0, "key", sign)
    assert q.concepts[0] == concepts[qa] and q.fidelity > 0.99
    assert k.concepts[0] == concepts[kb] and k.fidelity > 0.99
    assert rep.direction(0, "key", -sign).concepts[:1] != [concepts[kb]]


def test_position_ratio_by_construction(tiny_model):
    w = describe_model(tiny_model)
    pos = w.stem.positional_embedding[1:]
    pos = pos - pos.mean(axis=0)
    # independent reference: the leading principal axis carries the largest variance, scikit-learn's PCA
    from sklearn.decomposition import PCA

    pca = PCA().fit(pos)
    ratios = position_ratio(w, pca.components_)
    expected = pca.explained_variance_ / (pca.explained_variance_.sum() / pos.shape[1])
    assert np.allclose(ratios, expected, rtol=1e-8)
    assert np.isclose(position_ratio(w, np.eye(w.width)).mean(), 1.0)


# ------------------------------------------------------------------------------------ edits


def _with_mlp_biases(model, seed=1):
    model = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for blk in model.visual.transformer.resblocks:
            blk.mlp.c_proj.bias.copy_(0.5 * torch.randn(blk.mlp.c_proj.bias.shape, generator=g))
    return model


def test_neuron_edit_exact_and_loads_in_stock_open_clip(tiny_name, tiny_model, tmp_path):
    import open_clip

    model = _with_mlp_biases(tiny_model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    edits = [NeuronEdit(0, 3, 0.0), NeuronEdit(1, 10, -1.5), NeuronEdit(-1, 200, 4.0)]
    x = _images(model, 2)
    edited = apply_neuron_edits(model, edits)
    predicted = encode_image(edit_neuron_weights(describe_model(model), edits), x.double().numpy())
    assert _rel(_embed(edited, x), predicted) <= 1e-5
    assert _rel(_embed(edited, x), _embed(model, x)) > 1e-3  # the edit changed the output
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k  # input untouched
    path, _ = save_checkpoint(edited, tmp_path / "n.safetensors")
    reloaded = open_clip.create_model(tiny_name, pretrained=str(path)).eval()
    assert _rel(_embed(reloaded, x), predicted) <= 1e-5
    with pytest.raises(WeightscopeError, match="neuron"):
        edit_neuron_weights(describe_model(model), [NeuronEdit(0, 10 ** 6, 0.0)])


def test_neuron_edit_vit_b16(vit_b16, vit_b16_weights):
    """ViT-B-16 (random init): edits in the first 3 blocks, compared on those blocks, one image."""
    edits = [NeuronEdit(0, 5, 0.0), NeuronEdit(1, 3000, -2.0), NeuronEdit(2, 17, 5.0)]
    x = _images(vit_b16, 1)
    edited = apply_neuron_edits(vit_b16, edits, weights=vit_b16_weights)
    edited.visual.transformer.resblocks = edited.visual.transformer.resblocks[:3]  # our own copy
    short = copy.copy(vit_b16_weights)
    short.layers = vit_b16_weights.layers[:3]
    assert _rel(_embed(edited, x), encode_image(edit_neuron_weights(short, edits), x.double().numpy())) <= 1e-5


def test_neuron_edit_bundled_model(tmp_path):
    import open_clip

    from weightscope.bundled import load_model
    from weightscope.shapes import bundled

    loaded = load_model()
    weights = describe_model(loaded)
    edits = [NeuronEdit(l, int(np.argmax(neuron_scores(weights, l)[0])), 0.0) for l in range(weights.n_layers)]
    edited = apply_neuron_edits(loaded, edits, weights=weights)
    x = _images(loaded.model, 2)
    predicted = encode_image(edit_neuron_weights(weights, edits), x.double().numpy())
    assert _rel(_embed(edited.model, x), predicted) <= 1e-5
    path, _ = save_checkpoint(edited, tmp_path / "b.safetensors")
    bundled.register()
    reloaded = open_clip.create_model(bundled.MODEL_NAME, pretrained=str(path)).eval()
    assert _rel(_embed(reloaded, x), predicted) <= 1e-5


# ------------------------------------------------------------------------------------ inspection API and CLI


def test_cli_inspect_what_qk_mlp_on_bundled_model(tmp_path, capsys, monkeypatch):
    from weightscope.cli import main
    from weightscope.analyses.inspection import Inspection

    monkeypatch.setenv("WEIGHTSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["inspect", "--what", "qk,mlp", "--layers", "4,5", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "QK" in out and "MLP neurons" in out
    result = Inspection.from_json(tmp_path / "o" / "inspection.json")
    assert not result.heads and {l for l, _ in result.qk} == {4, 5} and {l for l, _ in result.neurons} == {4, 5}
    again = Inspection.from_dict(result.to_dict())
    assert again.to_dict() == result.to_dict()
    html = (tmp_path / "o" / "report.html").read_text()
    assert "Query-key directions" in html and "MLP neurons" in html
    # a typo is one error line and exit status 2, before any model is loaded
    assert main(["inspect", "--what", "vo,mpl", "--out", str(tmp_path / "p")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "mpl" in err[0]
    assert not (tmp_path / "p").exists()


def test_change_by_kind_locates_a_planted_change(tiny_model):
    from weightscope.analyses.neurons import change_by_kind

    base = describe_model(tiny_model)
    tuned = copy.deepcopy(base)
    rng = np.random.default_rng(3)
    tuned.layers[1].mlp_out[4] += rng.normal(size=base.width)
    tuned.layers[0].attn.read_k[2] *= 1.5  # W_QK of head 2 scaled by 1.5
    ch = change_by_kind(base, tuned)
    assert ch["vo"].tolist() == [0.0, 0.0] and ch["mlp_in"].tolist() == [0.0, 0.0] and ch["qk"][1] == 0.0
    assert ch["mlp_out"][0] == 0.0
    M0, M1 = base.layers[1].mlp_out, tuned.layers[1].mlp_out
    assert np.isclose(ch["mlp_out"][1], np.linalg.norm(M1 - M0) / np.linalg.norm(M0))
    # dense reference for the query-key change of layer 0
    a = base.layers[0].attn
    dense = [a.read_q[h] @ a.read_k[h].T for h in range(base.n_heads)]
    expected = 0.5 * np.linalg.norm(dense[2]) / np.sqrt(sum(np.linalg.norm(W) ** 2 for W in dense))
    assert np.isclose(ch["qk"][0], expected, rtol=1e-8)


def test_change_by_kind_of_a_layer_zero_in_both_checkpoints_is_zero_not_nan(tiny_model):
    """A layer whose heads write nothing in both checkpoints did not change (0); zero before and not after: inf."""
    from weightscope.analyses.neurons import change_by_kind

    base = describe_model(tiny_model)
    base.layers[1].attn.write_o[:] = 0.0          # every head of layer 1 writes nothing
    tuned = copy.deepcopy(base)
    ch = change_by_kind(base, tuned)
    assert ch["vo"].tolist() == [0.0, 0.0] and not np.isnan(ch["vo"]).any()
    tuned.layers[1].attn.write_o[0] += 1.0        # now head 0 writes something where the base wrote nothing
    assert change_by_kind(base, tuned)["vo"][1] == np.inf
