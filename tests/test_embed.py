"""Concept embedding: bucketed encoding equals open_clip's full-context encode_text; cache behaviour."""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

from weightscope.concepts import embed, vocab
from weightscope.models.adapters import openclip_text as oct_
from weightscope.core.errors import WeightscopeError

from conftest import asymmetrize

TOL = 1e-5

# Lengths from 1 BPE token to the full context: single words, phrases, punctuation, digits, unicode.
CONCEPTS = [
    "cat", "a dog", "steel", "snowy mountains", "a red circle in the top left corner",
    "photograph of a small wooden boat floating on a calm lake at sunset, seen from above",
    "!", "123", "naïve café", "ice-cream", "C-3PO", "New York City skyline at night",
    "x", "the", "a very long description " * 6, "zebra stripes", "polka dots", "rust",
]
# open_clip's tokenizer gives "x " * 75 exactly 75 + 2 = 77 tokens: hits the context limit exactly.
AT_LIMIT = "x " * 75
OVERLONG = "y " * 90


def _tokenizer():
    import open_clip

    return open_clip.get_tokenizer("ViT-B-32")


def _small_clip(seed: int = 0, custom_text: bool = False, **text_overrides) -> torch.nn.Module:
    """A small random-init open_clip model (2-layer text tower of width 32) in eval mode."""
    from open_clip.model import CLIP, CustomTextCLIP

    text_cfg = dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=2)
    text_cfg.update(text_overrides)
    vision_cfg = dict(image_size=16, patch_size=8, width=32, layers=1, head_width=16)
    torch.manual_seed(seed)
    cls = CustomTextCLIP if custom_text else CLIP
    return cls(embed_dim=24, vision_cfg=vision_cfg, text_cfg=text_cfg).eval()


def _reference(model, texts) -> np.ndarray:
    with torch.no_grad():
        return model.encode_text(_tokenizer()(texts)).float().numpy()


@pytest.fixture(scope="module")
def tok():
    return _tokenizer()


@pytest.fixture(scope="module")
def vit_b32():
    import open_clip

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_clip.create_model("ViT-B-32", pretrained=None).eval()


@pytest.fixture(scope="module")
def small():
    return _small_clip()


# ------------------------------------------------------------------------------------------------
# Exactness of the bucketed (cut-context) encoder
# ------------------------------------------------------------------------------------------------

def test_at_limit_concept_fills_the_context_exactly(tok):
    tokens, overlong = oct_.tokenize(tok, [AT_LIMIT, OVERLONG, "cat"], 77)
    assert tokens[0, -1].item() == tok.eot_token_id and not overlong[0]
    assert overlong[1] and not overlong[2]


def test_bucketed_equals_open_clip_vit_b32(vit_b32, tok):
    texts = CONCEPTS + [AT_LIMIT] + [f"object number {i} " * (i % 5 + 1) for i in range(12)]
    # batch_size 7 mixes lengths inside batches and splits equal lengths across batches
    got = embed.encode_texts(vit_b32, tok, texts, batch_size=7, bucketed=True, progress=False)
    ref = _reference(vit_b32, texts)
    assert got.shape == ref.shape == (len(texts), 512)
    assert np.abs(got - ref).max() <= TOL
    # the check has teeth: features differ between concepts by far more than the tolerance
    assert np.abs(ref[0] - ref[1]).max() > 1e3 * TOL


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"pool_type": "eos", "eos_id": 49407},     # pool at the tokenizer's end-of-text id
        {"proj_bias": True},                       # nn.Linear projection
        {"ls_init_value": 0.5},                    # LayerScale
        {"qk_norm": True},                         # open_clip's custom attention block
        {"context_length": 20},                    # a shorter context
    ],
    ids=["plain", "eos-pool", "linear-proj", "layerscale", "custom-block", "ctx20"],
)
def test_bucketed_equals_open_clip_small_configs(tok, overrides):
    model = asymmetrize(_small_clip(seed=1, **overrides))  # LayerNorm gains/shifts, biases, LayerScale not trivial
    ctx = overrides.get("context_length", 77)
    texts = [t for t in CONCEPTS if len(tok.encode(t)) + 2 <= ctx] + ["z " * (ctx - 2)]
    got = embed.encode_texts(model, tok, texts, batch_size=5, bucketed=True, progress=False)
    with torch.no_grad():
        ref = model.encode_text(tok(texts, context_length=ctx)).float().numpy()
    assert np.abs(got - ref).max() <= TOL


def test_bucketed_equals_open_clip_custom_text_clip(tok):
    model = _small_clip(seed=2, custom_text=True)
    assert oct_.text_tower(model).family == "open_clip.CustomTextCLIP"
    got = embed.encode_texts(model, tok, CONCEPTS + [AT_LIMIT], batch_size=4, bucketed=True, progress=False)
    assert np.abs(got - _reference(model, CONCEPTS + [AT_LIMIT])).max() <= TOL


def test_unsupported_towers_fall_back_to_full_context(tok):
    for overrides, custom in (({"no_causal_mask": True}, True), ({"embed_cls": True}, True)):
        model = _small_clip(seed=3, custom_text=custom, **overrides)
        with pytest.raises(WeightscopeError, match="not exact"):
            embed.encode_texts(model, tok, ["cat", "dog"], bucketed=True, progress=False)
        with pytest.warns(UserWarning, match="full context"):
            got = embed.encode_texts(model, tok, CONCEPTS, bucketed=None, progress=False)
        assert np.abs(got - _reference(model, CONCEPTS)).max() <= TOL


def test_non_openclip_model_is_refused(tok):
    with pytest.raises(WeightscopeError, match="no open_clip text transformer"):
        embed.encode_texts(torch.nn.Linear(3, 3), tok, ["cat"], progress=False)


def test_output_order_is_input_order(small, tok):
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(CONCEPTS))
    a = embed.encode_texts(small, tok, CONCEPTS, batch_size=3, progress=False)
    b = embed.encode_texts(small, tok, [CONCEPTS[i] for i in perm], batch_size=3, progress=False)
    assert np.abs(a[perm] - b).max() <= TOL


def test_training_mode_is_restored(tok):
    model = _small_clip(seed=4).train()
    embed.encode_texts(model, tok, ["cat", "dog"], progress=False)
    assert model.training


# ------------------------------------------------------------------------------------------------
# Over-long concepts, input validation, normalisation
# ------------------------------------------------------------------------------------------------

def test_overlong_concept_is_an_error_naming_it(small, tok, tmp_path):
    with pytest.raises(WeightscopeError, match=r"entry 1 'y y y.*on_overlong='truncate'"):
        embed.embed_concepts(small, tok, ["cat", OVERLONG], cache_dir=tmp_path, progress=False)
    # exactly at the limit is fine
    embed.embed_concepts(small, tok, ["cat", AT_LIMIT], cache_dir=tmp_path, progress=False)


def test_overlong_truncate_matches_open_clip_truncation(small, tok):
    got = embed.encode_texts(small, tok, ["cat", OVERLONG], on_overlong="truncate", progress=False)
    assert np.abs(got - _reference(small, ["cat", OVERLONG])).max() <= TOL


def test_input_validation(small, tok, tmp_path):
    kw = dict(cache_dir=tmp_path, progress=False)
    with pytest.raises(WeightscopeError, match="duplicates entry 0"):
        embed.embed_concepts(small, tok, ["cat", "Cat"], **kw)
    with pytest.raises(WeightscopeError, match="empty"):
        embed.embed_concepts(small, tok, [], **kw)
    with pytest.raises(WeightscopeError, match="entry 1 is int"):
        embed.embed_concepts(small, tok, ["cat", 3], **kw)
    with pytest.raises(WeightscopeError, match="exactly one"):
        embed.embed_concepts(small, tok, ["cat", "dog"], template="a photo", **kw)
    with pytest.raises(WeightscopeError, match="normalize="):
        embed.embed_concepts(small, tok, ["cat", "dog"], normalize="unit", **kw)
    with pytest.raises(WeightscopeError, match="at least 2"):
        embed.embed_concepts(small, tok, ["cat"], normalize="splice", **kw)
    with pytest.raises(WeightscopeError, match="on_overlong="):
        embed.embed_concepts(small, tok, ["cat", "dog"], on_overlong="cut", **kw)


def test_builtin_vocabulary_by_name_with_splice(small, tok, tmp_path):
    emb = embed.embed_concepts(small, tok, "cifar10", cache_dir=tmp_path, progress=False)
    ref = embed.normalize_embeddings(_reference(small, vocab.load_vocabulary("cifar10")), "splice")
    assert emb.shape == (10, 24) and np.abs(emb - ref).max() <= TOL


def test_template_is_applied(small, tok, tmp_path):
    got = embed.embed_concepts(small, tok, ["cat", "dog"], template="a photo of {}.", normalize="none",
                               cache_dir=tmp_path, progress=False)
    assert np.abs(got - _reference(small, ["a photo of cat.", "a photo of dog."])).max() <= TOL


def test_normalisations():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 5)) + 3.0
    l2 = embed.normalize_embeddings(x, "l2")
    np.testing.assert_allclose(np.linalg.norm(l2, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(l2 * np.linalg.norm(x, axis=1, keepdims=True), x, rtol=1e-5)
    sp = embed.normalize_embeddings(x, "splice")
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    c = u - u.mean(axis=0)
    np.testing.assert_allclose(sp, c / np.linalg.norm(c, axis=1, keepdims=True), atol=1e-6)
    # centring removed the shared offset: the mean direction is gone
    assert np.abs(sp.mean(axis=0)).max() < np.abs(l2.mean(axis=0)).max()
    assert embed.normalize_embeddings(x, "none").dtype == np.float32
    with pytest.raises(WeightscopeError, match="zero length"):
        embed.normalize_embeddings(np.zeros((2, 3)), "l2")


# ------------------------------------------------------------------------------------------------
# Cache
# ------------------------------------------------------------------------------------------------

KEY_ARGS = dict(model_name="m", weights_hash="w", tokenizer_id="t", concepts_hash="c",
                template=None, normalize="splice", on_overlong="error")


@pytest.mark.parametrize("field,value", [
    ("model_name", "m2"), ("model_name", None), ("weights_hash", "w2"), ("tokenizer_id", "t2"),
    ("concepts_hash", "c2"), ("template", "a photo of {}"), ("normalize", "l2"), ("on_overlong", "truncate"),
])
def test_cache_key_changes_with_every_input(field, value):
    assert embed.cache_key(**KEY_ARGS) == embed.cache_key(**dict(KEY_ARGS))
    assert embed.cache_key(**{**KEY_ARGS, field: value}) != embed.cache_key(**KEY_ARGS)


def test_hashes_track_weights_and_vocabulary(tok):
    a, b = _small_clip(seed=5), _small_clip(seed=5)
    assert embed.text_tower_hash(a) == embed.text_tower_hash(b)          # same weights, same hash
    with torch.no_grad():
        b.ln_final.weight[3] += 1e-3                                      # in-place edit bumps the version
    assert embed.text_tower_hash(a) != embed.text_tower_hash(b)
    with torch.no_grad():
        a.visual.proj.mul_(2.0)                                           # the vision tower is not part of it
    assert embed.text_tower_hash(a) == embed.text_tower_hash(_small_clip(seed=5))
    assert embed.vocabulary_hash(["a", "b"]) != embed.vocabulary_hash(["b", "a"])
    assert embed.vocabulary_hash(["a b"]) != embed.vocabulary_hash(["a", "b"])
    assert oct_.tokenizer_fingerprint(tok) != oct_.tokenizer_fingerprint(
        type(tok)(context_length=77, clean="whitespace"))


def _count_encodes(monkeypatch):
    calls = []
    real = oct_.encode_truncated

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(oct_, "encode_truncated", counting)
    return calls


def test_cache_hit_skips_encoding_and_misses_on_changes(small, tok, tmp_path, monkeypatch):
    calls = _count_encodes(monkeypatch)
    kw = dict(cache_dir=tmp_path, model_name="small", progress=False)
    first = embed.embed_concepts(small, tok, CONCEPTS, **kw)
    n_first = len(calls)
    assert n_first > 0 and len(list((tmp_path / "embeddings").glob("*.wsemb"))) == 1
    again = embed.embed_concepts(small, tok, CONCEPTS, **kw)
    assert len(calls) == n_first and np.array_equal(first, again)         # served from disk
    variants = [
        dict(concepts=CONCEPTS[:-1]), dict(template="a photo of {}"), dict(normalize="l2"),
        dict(model_name="other"),
    ]
    for v in variants:
        before = len(calls)
        args = {**kw, **v}
        embed.embed_concepts(small, tok, args.pop("concepts", CONCEPTS), **args)
        assert len(calls) > before, v
    assert len(list((tmp_path / "embeddings").glob("*.wsemb"))) == 1 + len(variants)
    before = len(calls)
    with torch.no_grad():
        small.token_embedding.weight[0, 0] += 1.0
    try:
        embed.embed_concepts(small, tok, CONCEPTS, **kw)
        assert len(calls) > before
    finally:
        with torch.no_grad():
            small.token_embedding.weight[0, 0] -= 1.0


def test_use_cache_false_writes_nothing(small, tok, tmp_path):
    embed.embed_concepts(small, tok, ["cat", "dog"], cache_dir=tmp_path, use_cache=False, progress=False)
    assert not (tmp_path / "embeddings").exists()


def test_cache_dir_env_and_argument(small, tok, tmp_path, monkeypatch):
    env_dir, arg_dir = tmp_path / "env", tmp_path / "arg"
    monkeypatch.setenv("WEIGHTSCOPE_CACHE_DIR", str(env_dir))
    assert embed.default_cache_dir() == env_dir
    embed.embed_concepts(small, tok, ["cat", "dog"], progress=False)
    assert len(list(env_dir.glob("embeddings/*.wsemb"))) == 1
    embed.embed_concepts(small, tok, ["cat", "dog"], cache_dir=arg_dir, progress=False)
    assert len(list(arg_dir.glob("embeddings/*.wsemb"))) == 1
    monkeypatch.delenv("WEIGHTSCOPE_CACHE_DIR")
    assert embed.default_cache_dir().name == "weightscope"


@pytest.mark.parametrize("damage", ["truncate", "flip_data", "garbage", "empty", "header"])
def test_corrupt_cache_is_reported_and_rebuilt(small, tok, tmp_path, monkeypatch, damage):
    kw = dict(cache_dir=tmp_path, model_name="small", progress=False)
    good = embed.embed_concepts(small, tok, CONCEPTS, **kw)
    (path,) = (tmp_path / "embeddings").glob("*.wsemb")
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) - 100]
    elif damage == "flip_data":
        raw[-5] ^= 0xFF
    elif damage == "garbage":
        raw = bytearray(b"not a cache file at all")
    elif damage == "empty":
        raw = bytearray()
    else:
        raw[len(embed._MAGIC) + 10] ^= 0xFF              # inside the JSON header
    path.write_bytes(bytes(raw))
    calls = _count_encodes(monkeypatch)
    with pytest.warns(UserWarning, match="corrupt"):
        rebuilt = embed.embed_concepts(small, tok, CONCEPTS, **kw)
    assert calls and np.array_equal(rebuilt, good)
    # the file was rewritten: the next call is a clean hit
    n = len(calls)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = embed.embed_concepts(small, tok, CONCEPTS, **kw)
    assert len(calls) == n and np.array_equal(again, good)
    assert not list((tmp_path / "embeddings").glob("*.tmp"))


def test_unwritable_cache_dir_warns_and_still_returns(small, tok, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should go")
    with pytest.warns(UserWarning, match="could not write"):
        emb = embed.embed_concepts(small, tok, ["cat", "dog"], cache_dir=blocker, progress=False)
    assert emb.shape == (2, 24)


# ------------------------------------------------------------------------------------------------
# The cache key sees every text-tower tensor (issue 21, kind 5)
# ------------------------------------------------------------------------------------------------

def _text_tensor_names(custom_text: bool) -> list[str]:
    """Every parameter and buffer of the small model outside the vision tower and the logit scale/bias, listed
    from torch (not from weightscope): what a fine-tune of the text side may change."""
    model = _small_clip(custom_text=custom_text)
    names = [n for n, _ in list(model.named_parameters()) + list(model.named_buffers())]
    if custom_text:
        return [n for n in names if n.startswith("text.")]
    return [n for n in names if not n.startswith(("visual.", "logit_"))]


@pytest.fixture(scope="module")
def pristine():
    """One small model per family; each test edits its own deep copy (cheaper than building a model)."""
    return {c: _small_clip(seed=6, custom_text=c) for c in (False, True)}


TEXT_TENSORS = [(False, n) for n in _text_tensor_names(False)] + [(True, n) for n in _text_tensor_names(True)]


@pytest.mark.parametrize("custom_text,name", TEXT_TENSORS,
                         ids=[f"{'custom' if c else 'clip'}:{n}" for c, n in TEXT_TENSORS])
def test_changing_any_text_tower_tensor_misses_the_cache(custom_text, name, tok, tmp_path, pristine):
    """A model whose text projection, positional embedding, mask or any other text weight was changed must not
    be served the embeddings cached for the unchanged model."""
    model = copy.deepcopy(pristine[custom_text])
    texts = ["a red circle in the corner", "snowy mountains", "cat"]
    kw = dict(cache_dir=tmp_path, model_name="small", normalize="none", progress=False)
    stale = embed.embed_concepts(model, tok, texts, **kw)
    tensor = dict(list(model.named_parameters()) + list(model.named_buffers()))[name]
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # in place, as a fine-tune's optimiser step would
        finite = torch.isfinite(tensor)
        tensor[finite] += 0.2 * torch.randn(int(finite.sum()), generator=g).to(tensor.dtype)
    fresh = _reference(model, texts)
    assert np.abs(fresh - stale).max() > 1e3 * TOL, "the perturbation must change the text features"
    got = embed.embed_concepts(model, tok, texts, **kw)
    assert np.abs(got - fresh).max() <= TOL


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_one_ulp_change_anywhere_changes_the_tower_hash(where, pristine):
    """Every byte counts, in every 4 MiB block: token_embedding (6.3 MB, two blocks) and text_projection."""
    for name in ("token_embedding.weight", "text_projection"):
        model = copy.deepcopy(pristine[False])
        before = embed.text_tower_hash(model)
        flat = dict(model.named_parameters())[name].data.view(-1)
        i = {"first": 0, "middle": flat.numel() // 2 + 1, "last": flat.numel() - 1}[where]
        with torch.no_grad():
            flat[i] = torch.nextafter(flat[i], torch.tensor(float("inf")))  # the lowest byte changes
        embed.forget_model_hash(model)
        assert embed.text_tower_hash(model) != before, (name, where)


def test_tensor_list_is_the_same_through_a_wrapper(pristine):
    from types import SimpleNamespace

    names = [n for n, _ in oct_.text_tower_tensors(pristine[False])]
    assert [n for n, _ in oct_.text_tower_tensors(SimpleNamespace(model=pristine[False]))] == names
    assert "text_projection" in names and "attn_mask" in names and not any(n.startswith("visual.") for n in names)


def test_hash_sees_values_not_layout(pristine):
    """A non-contiguous copy of a text tensor hashes like the contiguous original (same values, same hash)."""
    a, b = copy.deepcopy(pristine[False]), copy.deepcopy(pristine[False])
    with torch.no_grad():
        b.text_projection = torch.nn.Parameter(a.text_projection.detach().T.contiguous().T)
    assert not b.text_projection.is_contiguous()
    assert embed.text_tower_hash(a) == embed.text_tower_hash(b)


def test_tokenizer_fingerprint_sees_settings_and_wrapped_tokenizers():
    class Tok:
        def __init__(self, vocab_size=10, inner=None):
            self.vocab_size = vocab_size
            if inner is not None:
                self.tokenizer = inner

    class Inner:
        def __init__(self, name):
            self.name_or_path = name

    def plain(texts):
        return texts

    assert oct_.tokenizer_fingerprint(Tok()) != oct_.tokenizer_fingerprint(Tok(vocab_size=11))
    assert "vocab_size=10" in oct_.tokenizer_fingerprint(Tok())
    assert oct_.tokenizer_fingerprint(Tok(inner=Inner("a"))) != oct_.tokenizer_fingerprint(Tok(inner=Inner("b")))
    assert oct_.tokenizer_fingerprint(Tok(inner=Inner("a"))) != oct_.tokenizer_fingerprint(Tok())
    assert oct_.tokenizer_fingerprint(plain).endswith("test_tokenizer_fingerprint_sees_settings_and_wrapped_tokenizers"
                                                      ".<locals>.plain")
    assert "None" not in oct_.tokenizer_fingerprint(Tok())  # absent settings are left out, not written as None


def test_tower_settings_are_part_of_the_hash(pristine, tok, tmp_path):
    """Same weights, another pooling rule: different features, so a different hash and a cache miss."""
    a, b = copy.deepcopy(pristine[False]), copy.deepcopy(pristine[False])
    b.text_pool_type = "first"
    texts = ["a red circle in the corner", "snowy mountains"]
    assert np.abs(_reference(a, texts) - _reference(b, texts)).max() > 1e3 * TOL
    assert embed.text_tower_hash(a) != embed.text_tower_hash(b)
    kw = dict(cache_dir=tmp_path, model_name="small", normalize="none", progress=False)
    embed.embed_concepts(a, tok, texts, **kw)
    assert np.abs(embed.embed_concepts(b, tok, texts, **kw) - _reference(b, texts)).max() <= TOL


def test_cache_file_names(tmp_path):
    """``<cache dir>/embeddings/<model>-<key>.wsemb``: the name made file-safe (or "model"), the key's first 32."""
    key = "0123456789abcdef" * 4
    assert embed.cache_path(tmp_path, "ViT-B/32 x", key) == tmp_path / "embeddings" / f"ViT-B_32_x-{key[:32]}.wsemb"
    assert embed.cache_path(tmp_path, None, key).name == f"model-{key[:32]}.wsemb"
