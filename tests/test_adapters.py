"""The neutral description reproduces the model: describe(model) -> reference forward == encode_image."""
import numpy as np
import pytest
import torch

from weightscope import WeightscopeError, describe_model, to_joint
from weightscope.models.adapters import write_attention
from weightscope.models.forward import encode_image

from conftest import TINY_CFG, make_model, register_config


def _assert_forward_matches(model, seed=0):
    size = model.visual.image_size[0]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref = model.encode_image(x).double().numpy()
    ours = encode_image(describe_model(model), x.double().numpy())
    assert np.abs(ours - ref).max() <= 1e-5 * np.abs(ref).max()


VARIANTS = {
    "plain": {},
    "layerscale": {"ls_init_value": 0.5},
    "avgpool": {"pool_type": "avg"},
    "ln-after-pool": {"final_ln_after_pool": True, "no_ln_pre": True},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_reference_forward_matches_open_clip(variant, tmp_path):
    cfg = {**TINY_CFG, "vision_cfg": {**TINY_CFG["vision_cfg"], **VARIANTS[variant]}}
    name = register_config(tmp_path, f"ws-test-{variant}", cfg)
    _assert_forward_matches(make_model(name, seed=3))


def test_quickgelu_and_real_architecture(vit_b16):
    _assert_forward_matches(make_model("ViT-B-32-quickgelu"))
    weights = describe_model(vit_b16)
    assert (weights.n_layers, weights.n_heads, weights.width, weights.embed_dim) == (12, 12, 768, 512)
    assert weights.layers[0].activation == "gelu"


def test_write_attention_round_trips(tiny_model):
    import copy

    model = copy.deepcopy(tiny_model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    w = describe_model(model)
    write_attention(model, 1, w.layers[1].attn)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_joint_map_linear_affine_and_image_mean(tiny_model):
    w = describe_model(tiny_model)
    rng = np.random.default_rng(0)
    v = rng.normal(size=(3, w.width))
    z = to_joint(w, v)
    assert z.shape == (3, w.embed_dim) and np.allclose(np.linalg.norm(z, axis=1), 1)
    # invariant to the all-ones component and to positive scale, as ln_post is
    assert np.allclose(to_joint(w, 5 * v + 2.0), z)
    # the linear map equals ln_post(x) @ proj up to scale when ln_post's shift is zero
    w.ln_post.shift[:] = 0
    centred = v - v.mean(1, keepdims=True)
    ln = centred / np.sqrt(centred.var(1, keepdims=True) + w.ln_post.eps) * w.ln_post.scale
    ref = ln @ w.proj
    assert np.allclose(to_joint(w, v, mode="affine"), ref / np.linalg.norm(ref, axis=1, keepdims=True))
    mean = np.ones(w.embed_dim) / np.sqrt(w.embed_dim)
    zm = to_joint(w, v, image_mean=mean)
    expect = z - mean
    assert np.allclose(zm, expect / np.linalg.norm(expect, axis=1, keepdims=True))
    with pytest.raises(WeightscopeError, match="image_mean has shape"):
        to_joint(w, v, image_mean=np.ones(7))
    with pytest.raises(WeightscopeError, match="unknown joint-space map"):
        to_joint(w, v, mode="full")


def test_non_vit_towers_are_refused(tmp_path):
    with pytest.raises(WeightscopeError, match="vision tower ModifiedResNet is not supported"):
        describe_model(make_model("RN50"))
    cfg = {**TINY_CFG, "vision_cfg": {**TINY_CFG["vision_cfg"], "attentional_pool": True, "attn_pooler_heads": 2,
                                      "attn_pooler_queries": 4}}
    with pytest.raises(WeightscopeError, match="attentional pooler"):
        describe_model(make_model(register_config(tmp_path, "ws-test-attnpool", cfg)))
    with pytest.raises(WeightscopeError, match="no vision tower"):
        describe_model(torch.nn.Linear(2, 2))
