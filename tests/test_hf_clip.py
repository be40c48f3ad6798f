"""Hugging Face transformers CLIP: the neutral description reproduces transformers' own forward, concept embeddings
equal get_text_features, edits are exact and saved folders load in stock ``CLIPModel.from_pretrained``."""
import builtins
import json

import numpy as np
import pytest
import scipy.linalg
import torch

transformers = pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")

from weightscope import WeightscopeError, describe_model, load_model  # noqa: E402
from weightscope.decompose import decompose_head  # noqa: E402
from weightscope.analyses.edit import Edit, apply_edits, edit_weights  # noqa: E402
from weightscope.concepts.embed import embed_concepts  # noqa: E402
from weightscope.models.forward import encode_image  # noqa: E402

CONCEPTS = ["cat", "a red circle", "small blue square", "dog", "the quick brown fox jumps"]


@pytest.fixture(autouse=True)
def _offline_private_cache(monkeypatch, tmp_path_factory):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import, maybe before the env
    monkeypatch.setenv("WEIGHTSCOPE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "hf-embedding-cache"))


def _config(act="quick_gelu", eos=49407, seed=0):
    return transformers.CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=77, vocab_size=49408, eos_token_id=eos, hidden_act=act),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, hidden_act=act),
        projection_dim=32)


def _randomize(model, seed):
    """Random biases and LayerNorm affines too (random init leaves biases at zero and scales at one, hiding
    transposes and misplaced folds)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    return model.eval()


def _model(act="quick_gelu", eos=49407, seed=0):
    torch.manual_seed(seed)
    return _randomize(transformers.CLIPModel(_config(act, eos)), seed + 1)


def _images(n=4, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _image_features(model, x):
    with torch.no_grad():
        out = model.get_image_features(pixel_values=x) if hasattr(model, "get_image_features") \
            else model(pixel_values=x).image_embeds
    return (out if torch.is_tensor(out) else out.pooler_output).double().numpy()


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def hf_model():
    return _model()


@pytest.fixture(scope="module")
def tok():
    import open_clip

    return open_clip.get_tokenizer("ViT-B-32")


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_reference_forward_equals_get_image_features(act):
    model = _model(act)
    w = describe_model(model)
    assert w.family == "transformers.CLIP" and w.layers[0].activation == act
    x = _images()
    assert _rel(encode_image(w, x.double().numpy()), _image_features(model, x)) <= 1e-5


def test_vision_model_with_projection(hf_model):
    vis = transformers.CLIPVisionModelWithProjection(
        transformers.CLIPVisionConfig(**{**_config().vision_config.to_dict(), "projection_dim": 32})).eval()
    vis.load_state_dict({k: v for k, v in hf_model.state_dict().items()
                         if k.startswith(("vision_model.", "visual_projection."))})
    x = _images()
    ref = _image_features(hf_model, x)
    assert _rel(_image_features(vis, x), ref) <= 1e-6  # same weights, other class
    assert _rel(encode_image(describe_model(vis), x.double().numpy()), ref) <= 1e-5


def test_factored_svd_equals_dense_from_torch_weights(hf_model):
    w = describe_model(hf_model)
    attn = hf_model.vision_model.encoder.layers[1].self_attn
    dh = attn.head_dim
    for h in range(attn.num_heads):
        cols = slice(h * dh, (h + 1) * dh)
        # x -> v_h = x Wv[rows].T ; v_h -> residual through out_proj columns of head h
        dense = (attn.v_proj.weight[cols].T @ attn.out_proj.weight[:, cols].T).double().detach().numpy()
        svd = decompose_head(w, 1, h)
        assert np.abs(svd.matrix() - dense).max() <= 1e-6 * np.abs(dense).max()
        s_ref = scipy.linalg.svdvals(dense)[:dh]
        assert np.allclose(svd.s, s_ref, rtol=1e-6, atol=1e-9 * s_ref[0])


@pytest.mark.parametrize("eos", [49407, 2])  # current configs pool at eos_token_id, legacy ones at the largest id
def test_concept_embeddings_equal_get_text_features(tok, eos):
    model = _model(eos=eos, seed=3)
    emb = embed_concepts(model, tok, CONCEPTS, normalize="none", use_cache=False, progress=False)
    with torch.no_grad():
        ref = model.get_text_features(input_ids=tok(CONCEPTS))
    ref = (ref if torch.is_tensor(ref) else ref.pooler_output).double().numpy()
    assert emb.shape == (len(CONCEPTS), 32)
    assert _rel(emb.astype(np.float64), ref) <= 1e-5


def test_edits_exact_and_saved_folder_loads_in_transformers(hf_model, tmp_path):
    from weightscope.models.adapters.hf_clip import save_folder

    before = {k: v.clone() for k, v in hf_model.state_dict().items()}
    edits = [Edit(0, 1, 0, 0.0), Edit(1, 2, 3, 2.5), Edit(-1, 0, 5, 0.3)]
    w = describe_model(hf_model)
    predicted = edit_weights(w, edits)
    edited = apply_edits(hf_model, edits)
    assert all(torch.equal(before[k], v) for k, v in hf_model.state_dict().items())  # input untouched
    # the edited torch model holds exactly the predicted factors (float32 storage)
    got = describe_model(edited)
    for lw_pred, lw_got in zip(predicted.layers, got.layers):
        scale = np.abs(lw_pred.attn.write_o).max()
        assert np.abs(lw_got.attn.write_o - lw_pred.attn.write_o).max() <= 1e-6 * scale
    x = _images(seed=5)
    prediction = encode_image(predicted, x.double().numpy())
    assert _rel(prediction, _image_features(hf_model, x)) > 1e-3  # the edit changes the output
    out = save_folder(edited, tmp_path / "edited")
    assert {"config.json", "model.safetensors", "weightscope.json"} <= {p.name for p in out.iterdir()}
    stock = transformers.CLIPModel.from_pretrained(str(out)).eval()
    assert _rel(_image_features(stock, x), prediction) <= 1e-5
    record = json.loads((out / "weightscope.json").read_text())
    assert [e["layer"] for e in record["edits"]] == [0, 1, 1]
    with pytest.raises(WeightscopeError, match="already exists"):
        save_folder(edited, out)


def test_singular_value_rescaled_exactly(hf_model):
    from weightscope.analyses.edit import BASIS

    basis = {"fold_ln": BASIS["fold_ln"], "center_write": BASIS["center_write"]}
    base = decompose_head(describe_model(hf_model), 1, 2, **basis).s
    got = decompose_head(describe_model(apply_edits(hf_model, [Edit(1, 2, 0, 0.5)])), 1, 2, **basis).s
    # the leading value is halved, the others are kept (the spectrum is re-sorted)
    assert np.allclose(np.sort(got), np.sort(np.r_[0.5 * base[0], base[1:]]), rtol=1e-5, atol=1e-6 * base[0])
    assert not np.allclose(np.sort(got), np.sort(base), rtol=1e-3)


def test_load_model_folder_object_and_errors(hf_model, tmp_path, tok):
    folder = tmp_path / "tiny"
    hf_model.save_pretrained(str(folder))
    loaded = load_model(str(folder))
    assert loaded.name == "hf:tiny" and loaded.tokenizer is not None
    x = _images()
    assert _rel(_image_features(loaded.model, x), _image_features(hf_model, x)) <= 1e-6
    assert load_model(hf_model).model is hf_model
    with pytest.raises(WeightscopeError, match="brings its own weights"):
        load_model(str(folder), pretrained="openai")
    with pytest.raises(WeightscopeError, match="cannot load transformers model 'nobody/no-such-clip'"):
        load_model("nobody/no-such-clip")
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(WeightscopeError, match="'bert' model; weightscope reads CLIP"):
        load_model(str(other))
    empty = tmp_path / "noweights"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(WeightscopeError, match="no weights"):
        load_model(str(empty))


def test_missing_transformers_names_the_extra(monkeypatch, tmp_path, hf_model):
    folder = tmp_path / "tiny"
    hf_model.save_pretrained(str(folder))
    real = builtins.__import__

    def no_transformers(name, *args, **kwargs):
        if name == "transformers" or name.startswith("transformers."):
            raise ImportError("No module named 'transformers'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_transformers)
    with pytest.raises(WeightscopeError, match=r'pip install -e "\.\[hf\]"'):
        load_model(str(folder))


def test_unsupported_transformers_model_is_refused():
    from weightscope.models.adapters.hf_clip import describe

    text_only = transformers.CLIPTextModelWithProjection(_config().text_config)
    with pytest.raises(WeightscopeError, match="CLIPTextModelWithProjection is not supported"):
        describe(text_only)


def test_cli_inspect_edit_compare_on_a_saved_folder(hf_model, tmp_path, capsys):
    from weightscope.cli import main

    folder = tmp_path / "tiny"
    hf_model.save_pretrained(str(folder))
    assert main(["inspect", str(folder), "--vocab", "shapes_world", "--layers", "1", "--heads", "0",
                 "--out", str(tmp_path / "insp")]) == 0
    assert (tmp_path / "insp").is_dir()
    out = tmp_path / "edited"
    assert main(["edit", str(folder), "--direction", "1:0:0", "--out", str(out)]) == 0
    stock = transformers.CLIPModel.from_pretrained(str(out)).eval()
    predicted = edit_weights(describe_model(hf_model), [Edit(1, 0, 0, 0.0)])
    x = _images(seed=7)
    assert _rel(_image_features(stock, x), encode_image(predicted, x.double().numpy())) <= 1e-5
    assert main(["compare", str(folder), str(out), "--in-process", "--quiet", "--out", str(tmp_path / "cmp")]) == 0
    text = capsys.readouterr().out
    assert "1 changed" in text and "L1 H0: rel.change" in text and "reweighted [0 x0.00]" in text
    assert (tmp_path / "cmp" / "compare.json").is_file()
    assert main(["edit", str(folder), "--direction", "1:0:0", "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "give a folder path" in capsys.readouterr().err


def test_resnet_tower_is_refused_in_one_line():
    from open_clip.modified_resnet import ModifiedResNet

    holder = torch.nn.Module()
    holder.visual = ModifiedResNet(layers=(1, 1, 1, 1), output_dim=32, heads=2, image_size=64, width=16)
    with pytest.raises(WeightscopeError, match=r"ModifiedResNet is not supported .*supported: open_clip") as err:
        describe_model(holder)
    assert "transformers CLIPModel" in str(err.value) and "\n" not in str(err.value)


def test_real_sized_vit_b16_vision_config():
    """ViT-B/16 shapes (768 wide, 12 layers x 12 heads, 224 px): the description still equals transformers."""
    cfg = transformers.CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                        num_attention_heads=12, image_size=224, patch_size=16, projection_dim=512)
    torch.manual_seed(0)
    model = _randomize(transformers.CLIPVisionModelWithProjection(cfg), 2)
    x = _images(2, seed=1).repeat(1, 1, 7, 7)  # 224 px
    w = describe_model(model)
    assert (w.n_layers, w.n_heads, w.width, w.embed_dim) == (12, 12, 768, 512)
    assert _rel(encode_image(w, x.double().numpy()), _image_features(model, x)) <= 1e-5
    svd = decompose_head(w, 11, 5)
    attn = model.vision_model.encoder.layers[11].self_attn
    cols = slice(5 * 64, 6 * 64)
    dense = (attn.v_proj.weight[cols].T @ attn.out_proj.weight[:, cols].T).double().detach().numpy()
    assert np.allclose(svd.s, scipy.linalg.svdvals(dense)[:64], rtol=1e-6, atol=1e-9 * svd.s[0])


def test_image_encoding_and_preprocess_for_the_image_analyses(hf_model, tmp_path, tok):
    """zeroshot.encode_images / build_classifier (used by sing and depth) and the similarity forward run on
    transformers models; the preprocessing equals transformers' CLIPImageProcessor on a crop-sized image."""
    from PIL import Image

    from weightscope.analyses.similarity.sources import clip_layers
    from weightscope.analyses.zeroshot import build_classifier, encode_images

    x = _images(seed=9)
    ref = _image_features(hf_model, x)
    got = encode_images(hf_model, x)
    assert np.allclose(got, ref / np.linalg.norm(ref, axis=1, keepdims=True), atol=1e-6)
    clf = build_classifier(hf_model, tok, ["cat", "dog"], ["a photo of a {}."])
    with torch.no_grad():
        t = hf_model.get_text_features(input_ids=tok(["a photo of a cat.", "a photo of a dog."]))
    t = (t if torch.is_tensor(t) else t.pooler_output).double().numpy()
    assert np.allclose(clf, t / np.linalg.norm(t, axis=1, keepdims=True), atol=1e-6)

    folder = tmp_path / "withproc"
    hf_model.save_pretrained(str(folder))
    processor = transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                                image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3])
    processor.save_pretrained(str(folder))
    loaded = load_model(str(folder))
    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    want = processor(images=im, return_tensors="pt")["pixel_values"][0]
    assert torch.allclose(loaded.preprocess(im), want, atol=1e-5)

    names, reduce, forward, size = clip_layers(loaded, layers=[1])
    assert names == ["vision_model.encoder.layers.1"] and size == (32, 32)
    seen = {}
    module = dict(loaded.model.named_modules())[names[0]]
    handle = module.register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    try:
        with torch.no_grad():
            assert np.allclose(forward(x).double().numpy(), ref, rtol=1e-6, atol=1e-6)
    finally:
        handle.remove()
    maps = reduce(names[0], seen["out"])
    assert maps.shape == (4, 4, 4, 64)  # a 4 x 4 patch grid of the 64-wide residual stream after block 1


def test_cli_sing_and_depth_on_a_saved_folder(hf_model, tmp_path):
    from weightscope.cli import main

    folder = tmp_path / "tiny"
    hf_model.save_pretrained(str(folder))
    assert main(["sing", str(folder), "--classes", "circle,square,triangle", "--vocab", "shapes_world",
                 "--out", str(tmp_path / "sing"), "--quiet"]) == 0
    sing = json.loads((tmp_path / "sing" / "sing.json").read_text())
    # three zero-shot class vectors in the 32-d joint space of the transformers model
    assert (sing["n_features"], sing["rank"], sing["null_dim"]) == (32, 3, 29)
    assert sing["logit_change"] < 1e-9
    assert main(["depth", str(folder), "--classes", "cifar10", "--out", str(tmp_path / "depth"), "--quiet"]) == 0
    depth = json.loads((tmp_path / "depth" / "depth.json").read_text())
    assert len(depth["classes"]) == 10 and "hf:tiny" in depth["source"]


def test_vision_and_text_pair_loads_as_one_model(hf_model, tok):
    cfg = hf_model.config
    vis = transformers.CLIPVisionModelWithProjection(
        transformers.CLIPVisionConfig(**{**cfg.vision_config.to_dict(), "projection_dim": 32})).eval()
    txt = transformers.CLIPTextModelWithProjection(
        transformers.CLIPTextConfig(**{**cfg.text_config.to_dict(), "projection_dim": 32})).eval()
    state = hf_model.state_dict()
    vis.load_state_dict({k: v for k, v in state.items() if k.startswith(("vision_model.", "visual_projection."))})
    txt.load_state_dict({k: v for k, v in state.items() if k.startswith(("text_model.", "text_projection."))})
    loaded = load_model((vis, txt))
    x = _images(seed=11)
    assert _rel(encode_image(describe_model(loaded), x.double().numpy()), _image_features(vis, x)) <= 1e-5
    emb = embed_concepts(loaded, tok, CONCEPTS, normalize="none", use_cache=False, progress=False)
    with torch.no_grad():
        ref = txt(input_ids=tok(CONCEPTS)).text_embeds.double().numpy()
    assert _rel(emb.astype(np.float64), ref) <= 1e-5
    with pytest.raises(WeightscopeError, match="must be \\(CLIPVisionModelWithProjection"):
        load_model((txt, vis))
    with pytest.raises(WeightscopeError, match="got 3 models"):
        load_model((vis, txt, txt))
