"""SigLIP / SigLIP 2 towers (open_clip TimmModel with a timm VisionTransformer trunk, no class token, attention-pool
(MAP) head; non-causal text tower pooled at the last token, SentencePiece tokenizer) on tiny configs: the description
reproduces open_clip's image features, concept embeddings equal its text features, pooling-head maps and key
directions match the torch module, block-head edits are exact and load in stock open_clip, and a SigLIP model loads
offline from a local tokenizer folder. Real-size ViT-B-16-SigLIP runs in the slow set."""
import copy
import json

import numpy as np
import pytest
import torch

from tower_helpers import embed, images, register_tiny_timm, rel
from weightscope import WeightscopeError, describe_model
from weightscope.analyses.edit import Edit, apply_edits, edit_weights, save_checkpoint
from weightscope.decompose import decompose_head
from weightscope.decompose.pooling import (decompose_pool_head, pool_head_factors, pool_head_image,
                                           pool_key_directions, pool_logits)
from weightscope.models.forward import encode_image, layer_norm

from conftest import asymmetrize, make_model, register_config

TIMM_NAME = "ws_test_siglip"
NAME = "ws-test-siglip"
HUB_TOKENIZER = "weightscope-tests/no-such-tokenizer"  # never fetched: the tests pass a local folder
CONTEXT = 16
VOCAB = 40
CORPUS = ["a photo of a red circle", "a blue square on a green field", "two yellow triangles", "a cat on a mat",
          "a dog in the park", "striped fur and round ears", "the sky at night", "a small orange star"]


def _register_timm():
    from timm.models.vision_transformer import VisionTransformer

    # SigLIP's form (vit_base_patch16_siglip_224) at 64 wide, 2 blocks of 4 heads, 8 px patches of 32 px images
    register_tiny_timm(TIMM_NAME, VisionTransformer, img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4,
                       class_token=False, global_pool="map")


CONFIG = {
    "embed_dim": 64, "init_logit_bias": -10, "custom_text": True,
    "vision_cfg": {"image_size": 32, "timm_model_name": TIMM_NAME, "timm_model_pretrained": False,
                   "timm_pool": "map", "timm_proj": "none"},
    "text_cfg": {"context_length": CONTEXT, "vocab_size": VOCAB, "hf_tokenizer_name": HUB_TOKENIZER,
                 "tokenizer_kwargs": {"clean": "canonicalize"}, "width": 64, "heads": 2, "layers": 2,
                 "no_causal_mask": True, "proj_bias": True, "pool_type": "last", "norm_kwargs": {"eps": 1e-6}},
}


@pytest.fixture(scope="module")
def name(tmp_path_factory):
    _register_timm()
    return register_config(tmp_path_factory.mktemp("siglipcfg"), NAME, CONFIG)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A SentencePiece unigram tokenizer trained here on a few sentences, saved as transformers saves T5's
    (tokenizer.json): the form of SigLIP's tokenizer folders on the hub."""
    import sentencepiece as spm
    from transformers import T5TokenizerFast

    d = tmp_path_factory.mktemp("spm")
    (d / "corpus.txt").write_text("\n".join(CORPUS * 10))
    spm.SentencePieceTrainer.train(input=str(d / "corpus.txt"), model_prefix=str(d / "tiny"), vocab_size=VOCAB,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   character_coverage=1.0, minloglevel=2, num_threads=1)
    sp = spm.SentencePieceProcessor(model_file=str(d / "tiny.model"))
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    out = d / "tokenizer"
    T5TokenizerFast(vocab=vocab, extra_ids=0, legacy=False).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def model(name):
    m = asymmetrize(make_model(name, seed=0), seed=1)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # a latent query far from init, so pooling heads attend unevenly
        m.visual.trunk.attn_pool.latent.copy_(2.0 * torch.randn(m.visual.trunk.attn_pool.latent.shape, generator=g))
    return m


def _images(n=3, seed=0):
    return images(n, seed, size=32)


def test_reference_forward_equals_open_clip_image_features(model):
    w = describe_model(model)
    assert w.pool == "map" and w.stem.class_embedding is None and w.stem.n_prefix == 0
    x = _images()
    assert rel(encode_image(w, x.double().numpy()), embed(model, x)) <= 1e-5


def test_concept_embeddings_equal_siglip_text_features(name, model, tokenizer_dir):
    from weightscope import load_model
    from weightscope.concepts.embed import encode_texts

    loaded = load_model(model, tokenizer=tokenizer_dir)
    texts = ["red circle", "a dog", "striped", "an orange star"]
    with pytest.warns(UserWarning, match="no causal mask"):  # bidirectional: every text at the full context
        ours = encode_texts(loaded, loaded.tokenizer, texts, progress=False)
    tokens = loaded.tokenizer(texts)
    assert tokens.shape == (4, CONTEXT) and int(tokens[0, -1]) == 0  # padded with SentencePiece's pad id
    with torch.no_grad():
        ref = model.encode_text(tokens).double().numpy()
    assert rel(ours.astype(np.float64), ref) <= 1e-5


def test_factored_equals_dense_for_block_and_pooling_heads(model):
    w = describe_model(model)
    trunk = model.visual.trunk
    D, dh = 64, 16
    for h in range(4):
        attn = trunk.blocks[1].attn
        v = attn.qkv.weight[2 * D + h * dh:2 * D + (h + 1) * dh].T.double()
        dense = (v @ attn.proj.weight[:, h * dh:(h + 1) * dh].T.double()).detach().numpy()
        svd = decompose_head(w, 1, h)
        assert np.abs(svd.matrix() - dense).max() <= 1e-10 * np.abs(dense).max()
        pool = trunk.attn_pool
        gamma = trunk.norm.weight.double().detach().numpy()
        vp = pool.kv.weight[D + h * dh:D + (h + 1) * dh].T.double().detach().numpy() * gamma[:, None]
        vp -= vp.mean(axis=0)  # ln_post centres every token
        dense_pool = vp @ pool.proj.weight[:, h * dh:(h + 1) * dh].T.double().detach().numpy()
        psvd = decompose_pool_head(w, h)
        assert psvd.kind == "pool_vo" and psvd.layer == 2
        assert np.abs(psvd.matrix() - dense_pool).max() <= 1e-10 * np.abs(dense_pool).max()


def _single_head_pool(model, head):
    """The torch attention pool with every other head's output columns and the MLP zeroed: its output is pooling
    head ``head``'s attention-weighted values through proj, plus proj's bias."""
    pool = copy.deepcopy(model.visual.trunk.attn_pool).double()
    dh = pool.head_dim
    with torch.no_grad():
        keep = torch.zeros(pool.proj.weight.shape[1], dtype=torch.bool)
        keep[head * dh:(head + 1) * dh] = True
        pool.proj.weight[:, ~keep] = 0
        pool.mlp.fc2.weight.zero_()
        pool.mlp.fc2.bias.zero_()
    return pool


def test_pooling_head_maps_and_key_directions_match_the_module(model):
    w = describe_model(model)
    ap = w.attn_pool
    norm = copy.deepcopy(model.visual.trunk.norm).double()
    g = np.random.default_rng(0)
    # constructed token sets: random tokens, some pushed along head 0's key direction so attention is far from even
    X = g.standard_normal((5, 16, 64))
    X[:, :4] += 3.0 * pool_key_directions(w)[0, 0] / np.linalg.norm(pool_key_directions(w)[0, 0])
    for h in range(4):
        pool = _single_head_pool(model, h)
        with torch.no_grad():
            out = pool(norm(torch.from_numpy(X))).numpy()
        a = torch.softmax(torch.from_numpy(pool_logits(w, X)[:, 0, h]), dim=-1).numpy()  # (N, T)
        xhat = layer_norm(X, w.ln_post)
        predicted = np.einsum("nt,nte->ne", a, xhat @ ap.read_v[h] + ap.bias_v[h]) @ ap.write_o[h] + ap.bias_o
        assert rel(predicted, out) <= 1e-10
        # M_h is exact on a token repeated everywhere: out(u) - out(-u) = 2 M_h u / sigma_u
        u = g.standard_normal(64)
        with torch.no_grad():
            both = pool(norm(torch.from_numpy(np.stack([np.tile(u, (16, 1)), np.tile(-u, (16, 1))])))).numpy()
        sigma = np.sqrt(np.var(u) + w.ln_post.eps)
        assert rel(pool_head_image(w, h, u / sigma)[0] * 2, both[0] - both[1]) <= 1e-10
    # attention under head 0 goes to the tokens pushed along its key direction
    assert a.shape == (5, 16)
    a0 = torch.softmax(torch.from_numpy(pool_logits(w, X)[:, 0, 0]), dim=-1).numpy()
    assert a0[:, :4].sum(axis=1).min() > 4 / 16


def test_joint_map_is_a_labelled_linearisation_with_its_error_measured_on_the_module(model):
    from weightscope.models.adapters import timm_vit

    w = describe_model(model)
    record = w.meta["joint_map"]
    assert record["kind"] == "linearisation" and 0 < record["error"] < 1
    # the same error from the torch module itself on the same seeded token sets
    rng = np.random.default_rng(timm_vit.LINEARISATION_SEED)
    raw = rng.standard_normal((timm_vit.LINEARISATION_SETS, 16, 64))
    trunk = copy.deepcopy(model.visual.trunk).double()
    X = layer_norm(raw, w.ln_post)
    with torch.no_grad():
        f = trunk.attn_pool(torch.from_numpy(X)).numpy()
    lin = X.mean(axis=1) @ w.proj
    resid = (f - f.mean(0)) - (lin - lin.mean(0))
    error = np.sqrt((resid ** 2).sum(1).mean()) / np.sqrt(((f - f.mean(0)) ** 2).sum(1).mean())
    assert abs(error - record["error"]) <= 1e-8


def test_block_head_edits_are_exact_and_load_in_stock_open_clip(name, model, tmp_path):
    import open_clip

    w = describe_model(model)
    edits = [Edit(0, 1, 0, 0.0), Edit(1, 3, 1, 2.0)]
    x = _images(seed=2)
    prediction = encode_image(edit_weights(w, edits), x.double().numpy())
    assert rel(prediction, embed(model, x)) > 1e-4
    edited = apply_edits(model, edits)
    edited._weightscope_name = name
    assert rel(embed(edited, x), prediction) <= 1e-5
    path, _ = save_checkpoint(edited, tmp_path / "edited.safetensors")
    stock = open_clip.create_model(name, pretrained=str(path)).eval()
    assert rel(embed(stock, x), prediction) <= 1e-5


def test_siglip_loads_offline_from_a_local_tokenizer_folder(name, tokenizer_dir, tmp_path, monkeypatch):
    import huggingface_hub.constants
    from open_clip.tokenizer import HFTokenizer
    from weightscope import load_model

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # fail at once, as on an offline machine
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightscopeError, match=r"comes from the Hugging Face hub .*--tokenizer DIR") as err:
        load_model(name)
    assert "\n" not in str(err.value)
    loaded = load_model(name, tokenizer=tokenizer_dir)
    texts = ["A Red circle!", "dog"]
    expected = HFTokenizer(str(tokenizer_dir), context_length=CONTEXT, clean="canonicalize")(texts)
    assert torch.equal(loaded.tokenizer(texts), expected)
    with pytest.raises(WeightscopeError, match="not found"):
        load_model(name, tokenizer=tmp_path / "missing")


def test_cli_inspect_runs_offline_with_a_local_tokenizer(name, model, tokenizer_dir, tmp_path):
    from weightscope import load_model
    from weightscope.cli import main

    loaded = load_model(name, tokenizer=tokenizer_dir)
    loaded.model.load_state_dict(model.state_dict())
    base, _ = save_checkpoint(loaded, tmp_path / "siglip.safetensors")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["red", "blue", "circle", "square", "dog", "cat", "night", "star", "fur", "park"]))
    assert main(["inspect", str(base), "--tokenizer", str(tokenizer_dir), "--vocab", str(vocab), "--layers", "1",
                 "--heads", "0", "--out", str(tmp_path / "insp")]) == 0
    result = json.loads((tmp_path / "insp" / "inspection.json").read_text())
    assert result


@pytest.mark.slow
def test_real_size_vit_b16_siglip_describe_and_decompose():
    w = describe_model(make_model("ViT-B-16-SigLIP"))
    assert (w.n_layers, w.width, w.n_heads, w.pool) == (12, 768, 12, "map")
    svd = decompose_head(w, 11, 0)
    assert svd.s.shape == (64,) and svd.rank == 64
    psvd = decompose_pool_head(w, 0)
    A, B = pool_head_factors(w, 0)
    assert np.allclose(psvd.s, np.linalg.svd(A @ B, compute_uv=False)[:64], rtol=1e-8)
    record = w.meta["joint_map"]  # random init: the MLP linearisation is poor; its measured error is what counts
    assert pool_key_directions(w).shape == (1, 12, 768) and np.isfinite(record["error"]) and record["error"] > 0
    assert record["error_before_mlp"] < 0.05  # near-even attention: the heads' sum is almost exact before the MLP


@pytest.mark.slow
def test_real_size_cli_inspect_offline_with_a_local_tokenizer(tokenizer_dir, tmp_path, monkeypatch):
    import huggingface_hub.constants
    from weightscope.cli import main

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["inspect", "ViT-B-16-SigLIP", "--tokenizer", str(tokenizer_dir), "--vocab", "shapes_world",
                 "--layers", "11", "--heads", "0", "--out", str(tmp_path / "insp")]) == 0
    assert json.loads((tmp_path / "insp" / "inspection.json").read_text())
