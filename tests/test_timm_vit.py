"""open_clip TimmModel towers with a timm VisionTransformer trunk: the description reproduces open_clip's
encode_image, edits are exact, saved checkpoints load in stock open_clip, and other timm towers are refused."""
import json

import numpy as np
import pytest
import scipy.linalg
import torch

from tower_helpers import embed, images, rel
from weightscope import WeightscopeError, describe_model
from weightscope.decompose import decompose_head
from weightscope.analyses.edit import Edit, apply_edits, edit_weights, save_checkpoint
from weightscope.models.forward import encode_image

from conftest import make_model, register_config

TEXT = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}


def _config(pool):
    # timm's test_vit: 64 wide, 6 blocks of 2 heads, 16 px patches at its native 160 px
    return {"embed_dim": 32, "text_cfg": TEXT,
            "vision_cfg": {"timm_model_name": "test_vit", "timm_model_pretrained": False, "timm_pool": pool,
                           "timm_proj": "linear", "image_size": 160}}


@pytest.fixture(scope="module")
def names(tmp_path_factory):
    d = tmp_path_factory.mktemp("timmcfg")
    return {pool: register_config(d, f"ws-test-timm-{pool or 'token'}", _config(pool)) for pool in ("", "avg")}


def _randomize(model, seed=0, layer_scale=False):
    """Random biases, LayerNorm affines and (optionally) LayerScale, so transposes and folds cannot hide."""
    from timm.layers import LayerScale

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if layer_scale:
            for blk in model.visual.trunk.blocks:
                blk.ls1 = LayerScale(blk.norm1.normalized_shape[0], init_values=0.5)
                blk.ls1.gamma.add_(0.3 * torch.randn(blk.ls1.gamma.shape, generator=g))
        for n, p in model.visual.named_parameters():
            if n.endswith("bias") or "norm" in n:
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    return model


def _images(n=3, seed=0):
    return images(n, seed, size=160)


@pytest.mark.parametrize("pool", ["", "avg"])
def test_reference_forward_and_edits_with_layer_scale(names, pool):
    model = _randomize(make_model(names[pool]), layer_scale=True)
    w = describe_model(model)
    assert w.family.startswith("open_clip.TimmModel") and w.pool == ("avg" if pool else "tok")
    x = _images()
    ref = embed(model, x)
    assert rel(encode_image(w, x.double().numpy()), ref) <= 1e-5
    edits = [Edit(0, 0, 0, 0.0), Edit(-1, 1, 2, 2.0)]
    prediction = encode_image(edit_weights(w, edits), x.double().numpy())
    assert rel(prediction, ref) > 1e-4  # the edit changes the output
    assert rel(embed(apply_edits(model, edits), x), prediction) <= 1e-5


def test_factored_svd_equals_dense_and_checkpoint_loads_in_open_clip(names, tmp_path):
    import open_clip

    model = _randomize(make_model(names[""]), seed=1)
    w = describe_model(model)
    attn = model.visual.trunk.blocks[2].attn
    D, dh = attn.proj.weight.shape[0], attn.head_dim
    for h in range(attn.num_heads):
        rows = slice(2 * D + h * dh, 2 * D + (h + 1) * dh)  # head h's value rows of the fused qkv
        dense = (attn.qkv.weight[rows].T @ attn.proj.weight[:, h * dh:(h + 1) * dh].T).double().detach().numpy()
        s_ref = scipy.linalg.svdvals(dense)[:dh]
        assert np.allclose(decompose_head(w, 2, h).s, s_ref, rtol=1e-6, atol=1e-9 * s_ref[0])
    edits = [Edit(2, 1, 0, 0.0)]
    model._weightscope_name = names[""]  # built by open_clip, not loaded by weightscope: name its architecture
    path, _ = save_checkpoint(apply_edits(model, edits), tmp_path / "edited.safetensors")
    stock = open_clip.create_model(names[""], pretrained=str(path)).eval()
    x = _images(seed=3)
    assert rel(embed(stock, x), encode_image(edit_weights(w, edits), x.double().numpy())) <= 1e-5


def test_cli_inspect_edit_compare(names, tmp_path, capsys):
    from weightscope.cli import main

    from weightscope import load_model

    loaded = load_model(names["avg"])  # records the architecture name the sidecar needs
    _randomize(loaded.model, seed=2)
    base, _ = save_checkpoint(loaded, tmp_path / "base.safetensors")
    assert main(["inspect", str(base), "--vocab", "shapes_world", "--layers", "5", "--heads", "0",
                 "--out", str(tmp_path / "insp")]) == 0
    assert (tmp_path / "insp" / "inspection.json").is_file()
    edited = tmp_path / "edited.safetensors"
    assert main(["edit", str(base), "--direction", "5:0:0", "--out", str(edited)]) == 0
    assert json.loads((tmp_path / "edited.safetensors.json").read_text())["edits"][0]["layer"] == 5
    assert main(["compare", str(base), str(edited), "--in-process", "--quiet", "--out", str(tmp_path / "cmp")]) == 0
    text = capsys.readouterr().out
    assert "1 changed" in text and "L5 H0: rel.change" in text


def test_other_timm_towers_are_refused_in_one_line(tmp_path):
    from open_clip.timm_model import TimmModel

    holder = torch.nn.Module()
    for visual, words in [
        (TimmModel("test_vit", embed_dim=32, image_size=160, pool="avg", proj="mlp"),
         "the projection head must be one Linear"),
        (TimmModel("test_vit", embed_dim=32, image_size=32, pool="", proj="linear"),
         "position embedding is not for the tower's (32, 32) px input"),
        (TimmModel("test_convnext", embed_dim=32, image_size=64, pool="avg", proj="linear"),
         "timm ConvNeXt trunk is not supported"),
    ]:
        holder.visual = visual
        with pytest.raises(WeightscopeError, match="supported: timm VisionTransformer trunks") as err:
            describe_model(holder)
        assert words in str(err.value) and "\n" not in str(err.value)


def test_block_hooks_give_the_patch_grid(names):
    from weightscope.analyses.similarity.sources import clip_layers

    model = make_model(names[""])
    chosen, reduce, forward, size = clip_layers(model, layers=[-1])
    assert chosen == ["visual.trunk.blocks.5"] and size == (160, 160)
    seen = {}
    handle = dict(model.named_modules())[chosen[0]].register_forward_hook(lambda m, i, o: seen.setdefault("o", o))
    try:
        with torch.no_grad():
            forward(_images(2))
    finally:
        handle.remove()
    assert reduce(chosen[0], seen["o"]).shape == (2, 10, 10, 64)  # 160 / 16 = 10 x 10 patches, 64 wide


def test_real_sized_vit_b16_trunk(tmp_path):
    """timm vit_base_patch16_224 (768 wide, 12 x 12 heads, 224 px) as an open_clip tower: still exact."""
    name = register_config(tmp_path, "ws-test-timm-b16", {
        "embed_dim": 512, "text_cfg": TEXT,
        "vision_cfg": {"timm_model_name": "vit_base_patch16_224", "timm_model_pretrained": False, "timm_pool": "",
                       "timm_proj": "linear", "image_size": 224}})
    model = _randomize(make_model(name), seed=4)
    w = describe_model(model)
    assert (w.n_layers, w.n_heads, w.width, w.embed_dim) == (12, 12, 768, 512)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    assert rel(encode_image(w, x.double().numpy()), embed(model, x)) <= 1e-5
