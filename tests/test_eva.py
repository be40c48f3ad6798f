"""EVA02-CLIP towers (open_clip TimmModel with a timm Eva trunk: RoPE, SwiGLU with a hidden LayerNorm, a LayerNorm on
the concatenated head outputs, LayerScale) on a tiny config: the description reproduces open_clip's image features,
head maps equal the dense product with the inner norm's centring and gain, 'qk' is refused in one line under RoPE,
write-backs the model can hold are exact and load in stock open_clip (others are refused in one line), concept
embeddings equal the text features, and ``weightscope inspect`` runs. Real-size EVA02-B-16 runs in the slow set."""
import json

import numpy as np
import pytest
import torch

from tower_helpers import embed, images, register_tiny_timm, rel
from weightscope import WeightscopeError, describe_model
from weightscope.analyses.edit import Edit, apply_edits, save_checkpoint
from weightscope.decompose import decompose_head
from weightscope.models.forward import encode_image

from conftest import asymmetrize, make_model, register_config

TIMM_NAME = "ws_test_eva"
NAME = "ws-test-eva"
CONFIG = {
    "embed_dim": 32, "custom_text": True,
    "vision_cfg": {"image_size": 32, "timm_model_name": TIMM_NAME, "timm_model_pretrained": False,
                   "timm_pool": "token", "timm_proj": None},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _register_timm():
    from timm.models.eva import Eva

    # eva02_base_patch16_clip_224's form at 64 wide, 2 blocks of 4 heads, 8 px patches, with LayerScale
    register_tiny_timm(TIMM_NAME, Eva, img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, qkv_fused=False,
                       mlp_ratio=4 * 2 / 3, swiglu_mlp=True, scale_mlp=True, scale_attn_inner=True,
                       use_rot_pos_emb=True, ref_feat_shape=(4, 4), init_values=0.5, global_pool="token")


@pytest.fixture(scope="module")
def name(tmp_path_factory):
    _register_timm()
    return register_config(tmp_path_factory.mktemp("evacfg"), NAME, CONFIG)


@pytest.fixture(scope="module")
def model(name):
    m = asymmetrize(make_model(name, seed=0), seed=1)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for blk in m.visual.trunk.blocks:
            for gamma in (blk.gamma_1, blk.gamma_2):
                gamma.copy_(0.5 + torch.rand(gamma.shape, generator=g))
        m.visual.trunk.head.weight.mul_(30)  # else the head's bias hides every image-dependent part of the output
    return m


def _images(n=3, seed=0):
    return images(n, seed, size=32)


def test_reference_forward_equals_open_clip_image_features(model):
    w = describe_model(model)
    a = w.layers[0].attn
    assert w.family.endswith("(timm Eva)") and a.rope is not None and a.inner_norm_eps is not None
    assert w.layers[0].mlp_gate is not None and w.proj_bias is not None
    x = _images()
    assert rel(encode_image(w, x.double().numpy()), embed(model, x)) <= 1e-5


def test_head_map_is_the_dense_product_through_the_inner_norm(model):
    """head h writes (1/sigma) v_h E_h^T P diag(g) W_proj^T diag(gamma_1): factored == dense, and the per-token scalar
    sigma is shared by all heads (the block's attention output == the factored sum divided by it)."""
    w = describe_model(model)
    blk = model.visual.trunk.blocks[1]
    attn = blk.attn
    n, dh = 64, 16
    P = np.eye(n) - 1.0 / n
    g = attn.norm.weight.double().detach().numpy()
    W = attn.proj.weight.double().detach().numpy()
    gamma = blk.gamma_1.double().detach().numpy()
    stacked = (P * g) @ W.T * gamma
    for h in range(4):
        rows = slice(h * dh, (h + 1) * dh)
        dense = attn.v_proj.weight[rows].T.double().detach().numpy() @ stacked[rows]
        svd = decompose_head(w, 1, h)
        assert np.abs(svd.matrix() - dense).max() <= 1e-10 * np.abs(dense).max()
    # one positive scalar per token, shared by the heads: the module == (sum of head writes) / sigma + bias
    x = torch.randn(2, 17, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    import copy
    block = copy.deepcopy(blk).double()
    rope = torch.from_numpy(np.concatenate([w.layers[1].attn.rope.sin, w.layers[1].attn.rope.cos], axis=1))
    heads = {}
    block.attn.norm.register_forward_hook(lambda m, i, o: heads.update(o=i[0]))  # returns None: output kept
    with torch.no_grad():
        out = (block.attn(x, rope=rope) * block.gamma_1).numpy()
    o = heads["o"].numpy()
    sigma = np.sqrt(o.var(axis=-1, keepdims=True) + w.layers[1].attn.inner_norm_eps)
    predicted = np.einsum("nthe,hed->ntd", o.reshape(2, 17, 4, dh), w.layers[1].attn.write_o) / sigma
    assert rel(predicted + w.layers[1].attn.bias_o, out) <= 1e-10


def test_qk_is_refused_in_one_line_under_rope(model):
    w = describe_model(model)
    with pytest.raises(WeightscopeError, match="RoPE") as err:
        decompose_head(w, 0, 0, kind="qk")
    assert "relative offset" in str(err.value) and "\n" not in str(err.value)
    assert decompose_head(w, 0, 0, kind="vo").rank == 16


def test_writes_the_model_can_hold_are_exact_and_load_in_stock_open_clip(name, model, tmp_path):
    import copy

    import open_clip
    from weightscope.models.adapters import write_attention

    w = describe_model(model)
    attn = copy.deepcopy(w.layers[1].attn)
    g = np.random.default_rng(3)
    change = 0.5 * g.standard_normal((64, 64))  # random-init proj weights are ~0.02: a change that shows
    change -= change.mean(axis=0)  # centred over the heads' coordinates: what the inner norm's centring allows
    attn.write_o = attn.write_o + change.reshape(4, 16, 64)
    attn.read_v = attn.read_v * 1.5  # alone this changes nothing: the inner norm divides the scale out
    attn.bias_o = attn.bias_o + 0.1
    edited_w = copy.deepcopy(w)
    edited_w.layers[1].attn = attn
    edited = copy.deepcopy(model)
    edited._weightscope_name = name
    write_attention(edited, 1, attn)
    x = _images(seed=2)
    prediction = encode_image(edited_w, x.double().numpy())
    assert rel(prediction, embed(model, x)) > 1e-3
    assert rel(embed(edited, x), prediction) <= 1e-5
    path, _ = save_checkpoint(edited, tmp_path / "edited.safetensors")
    stock = open_clip.create_model(name, pretrained=str(path)).eval()
    assert rel(embed(stock, x), prediction) <= 1e-5
    # one head's write map alone breaks the shared centring: refused in one line
    with pytest.raises(WeightscopeError, match="shared by all heads") as err:
        apply_edits(model, [Edit(1, 2, 0, 0.0)])
    assert "\n" not in str(err.value)


def test_concept_embeddings_equal_text_features(model):
    import open_clip
    from weightscope import load_model
    from weightscope.concepts.embed import encode_texts

    loaded = load_model(model)
    texts = ["a red circle", "dog", "a photo of a striped cat"]
    ours = encode_texts(loaded, loaded.tokenizer, texts, progress=False, bucketed=True)
    with torch.no_grad():
        ref = model.encode_text(open_clip.get_tokenizer("ViT-B-32")(texts)).double().numpy()
    assert rel(ours.astype(np.float64), ref) <= 1e-5


def test_cli_inspect_runs(name, model, tmp_path):
    from weightscope import load_model
    from weightscope.cli import main

    loaded = load_model(name)
    loaded.model.load_state_dict(model.state_dict())
    base, _ = save_checkpoint(loaded, tmp_path / "eva.safetensors")
    assert main(["inspect", str(base), "--vocab", "shapes_world", "--layers", "1", "--heads", "0",
                 "--out", str(tmp_path / "insp")]) == 0
    assert json.loads((tmp_path / "insp" / "inspection.json").read_text())


@pytest.mark.slow
def test_real_size_eva02_b16_describe_and_decompose():
    model = make_model("EVA02-B-16")
    w = describe_model(model)
    assert (w.n_layers, w.width, w.n_heads) == (12, 768, 12) and w.layers[0].attn.inner_norm_eps is not None
    svd = decompose_head(w, 11, 0)
    assert svd.s.shape == (64,) and svd.rank == 64
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    assert rel(encode_image(w, x.double().numpy()), embed(model, x)) <= 1e-5


def test_open_clip_scale_attn_inner_is_described_with_the_same_convention(tmp_path):
    """open_clip's own ViT with scale_attn_inner (ln_inner): described, not refused; exact forward; holdable
    write-backs exact; a one-head write edit refused in one line."""
    import copy

    from weightscope.models.adapters import write_attention
    from conftest import TINY_CFG

    cfg = {**TINY_CFG, "vision_cfg": {**TINY_CFG["vision_cfg"], "scale_attn_inner": True}}
    model = asymmetrize(make_model(register_config(tmp_path, "ws-test-inner", cfg), seed=0), seed=2)
    w = describe_model(model)
    assert w.layers[0].attn.inner_norm_eps is not None
    x = _images()
    assert rel(encode_image(w, x.double().numpy()), embed(model, x)) <= 1e-5
    attn = copy.deepcopy(w.layers[1].attn)
    change = 0.5 * np.random.default_rng(0).standard_normal((64, 64))
    attn.write_o = attn.write_o + (change - change.mean(axis=0)).reshape(4, 16, 64)
    attn.bias_o = attn.bias_o - 0.2
    edited_w = copy.deepcopy(w)
    edited_w.layers[1].attn = attn
    edited = copy.deepcopy(model)
    write_attention(edited, 1, attn)
    prediction = encode_image(edited_w, x.double().numpy())
    assert rel(prediction, embed(model, x)) > 1e-3 and rel(embed(edited, x), prediction) <= 1e-5
    with pytest.raises(WeightscopeError, match="shared by all heads"):
        apply_edits(model, [Edit(0, 1, 0, 0.0)])


@pytest.mark.slow
def test_real_size_cli_inspect_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants
    from weightscope.cli import main

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["inspect", "EVA02-B-16", "--vocab", "shapes_world", "--layers", "11", "--heads", "0",
                 "--out", str(tmp_path / "insp")]) == 0
    assert json.loads((tmp_path / "insp" / "inspection.json").read_text())
