"""Adapter for Hugging Face ``transformers`` CLIP vision towers (``CLIPModel``, ``CLIPVisionModelWithProjection``).

The only place that knows transformers' CLIP vision parameter names. ``describe`` reads a tower into the neutral
:class:`VisionWeights`, ``write_attention`` writes edited per-head factors back, ``load_folder`` / ``load_hub`` /
``loaded_from_object`` build a :class:`weightscope.models.load.LoadedModel`, and ``save_folder`` writes an edited model as a
folder that stock ``CLIPModel.from_pretrained`` loads (``config.json`` + ``model.safetensors``).

transformers' CLIP vision block (``CLIPEncoderLayer``) is open_clip's pre-LN block with the attention's q, k, v
and output maps as four separate ``nn.Linear`` layers with biases; logits are ``q k^T / sqrt(dh)``. The tower
pools the class token and applies ``post_layernorm`` after pooling, then ``visual_projection`` (a bias-free
Linear, weight (E, D)). Neither LayerScale nor head scales exist, so a head's write factor is the slice of
``out_proj`` it reads through.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from ...core.errors import WeightscopeError
from ...core.weights import AttentionWeights, LayerNormWeights, LayerWeights, StemWeights, VisionWeights
from ._finite import check_finite

FAMILY = "transformers.CLIP"
EXTRA = 'pip install -e ".[hf]"'
ACTIVATIONS = {"gelu": "gelu", "quick_gelu": "quick_gelu"}
#: files of a model folder that describe tokenizer and preprocessing; copied next to an edited model
SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
              "preprocessor_config.json")
RECORD = "weightscope.json"


def transformers_module():
    """``transformers``, or a one-line error naming the extra that installs it."""
    try:
        import transformers
    except ImportError:
        raise WeightscopeError("Hugging Face CLIP models need the transformers package: "
                               f"{EXTRA} (or pip install 'transformers>=4.40')") from None
    return transformers


def is_hf_model(model) -> bool:
    """True when ``model`` is a transformers model (checked without importing transformers)."""
    return isinstance(model, torch.nn.Module) and type(model).__module__.startswith("transformers.")


def is_hf_folder(path) -> bool:
    """True for a local folder holding a transformers ``config.json`` (and no open_clip config)."""
    p = Path(str(path))
    return p.is_dir() and (p / "config.json").is_file() and not (p / "open_clip_config.json").is_file()


def is_hub_id(name) -> bool:
    """True for an ``ORG/NAME`` string that is no local path, checkpoint file or open_clip ``hf-hub:``/``local-dir:``
    name: a Hugging Face hub id for transformers' loader (open_clip model names hold no slash)."""
    from ..checkpoints import SUFFIXES

    return (isinstance(name, str) and "/" in name and not name.startswith(("hf-hub:", "local-dir:"))
            and not Path(name).exists() and not name.lower().endswith(SUFFIXES))


def is_hf_spec(name) -> bool:
    """True when the model argument names a transformers model (a local CLIP folder or a hub id)."""
    return isinstance(name, str) and (is_hf_folder(name) or is_hub_id(name))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy().copy()


def _ln(mod) -> LayerNormWeights:
    d = mod.normalized_shape[0]
    scale = _np(mod.weight) if mod.weight is not None else np.ones(d)
    shift = _np(mod.bias) if mod.bias is not None else np.zeros(d)
    return LayerNormWeights(scale, shift, float(mod.eps))


def _tower(model) -> tuple[torch.nn.Module, torch.nn.Linear]:
    """(vision_model, visual_projection) of a CLIPModel / CLIPVisionModelWithProjection; WeightscopeError otherwise."""
    vm, proj = getattr(model, "vision_model", None), getattr(model, "visual_projection", None)
    if vm is None or proj is None or not hasattr(vm, "encoder") or not hasattr(vm, "pre_layrnorm"):
        raise WeightscopeError(
            f"transformers model {type(model).__name__} is not supported: weightscope reads CLIPModel and "
            "CLIPVisionModelWithProjection (a ViT vision tower with visual_projection); other towers (SigLIP, "
            "convolutional) are refused")
    if proj.bias is not None:
        raise WeightscopeError("visual_projection has a bias; weightscope needs the linear CLIP projection")
    return vm, proj


def _activation(model) -> str:
    cfg = model.config
    act = getattr(getattr(cfg, "vision_config", cfg), "hidden_act", None)
    if act not in ACTIVATIONS:
        raise WeightscopeError(f"vision tower activation {act!r} is not supported; supported: gelu and quick_gelu")
    return ACTIVATIONS[act]


def describe(model: torch.nn.Module, keep: set[int] | None = None) -> VisionWeights:
    """Read a transformers CLIP vision tower into the neutral description (float64 numpy copies).

    Raises WeightscopeError for unsupported models, activations and non-finite weights.
    """
    vm, proj = _tower(model)
    from .openclip_vit import _kept

    check_finite(_kept(vm.named_parameters(), keep, r"encoder\.layers\.(\d+)\."), None, prefix="vision_model.")
    act = _activation(model)
    layers = [_describe_block(block, i, act) if keep is None or i in keep else None
              for i, block in enumerate(vm.encoder.layers)]
    emb = vm.embeddings
    if emb.patch_embedding.bias is not None:
        raise WeightscopeError("the patch embedding has a bias; weightscope's reference stem has none")
    stem = StemWeights(
        patch_weight=_np(emb.patch_embedding.weight),
        class_embedding=_np(emb.class_embedding),
        positional_embedding=_np(emb.position_embedding.weight),
        ln_pre=_ln(vm.pre_layrnorm),
    )
    eps = max(torch.finfo(p.dtype).eps for p in vm.parameters() if p.is_floating_point())
    return VisionWeights(family=FAMILY, stem=stem, layers=layers, ln_post=_ln(vm.post_layernorm),
                         proj=_np(proj.weight).T.copy(), pool="tok", ln_after_pool=True, eps=float(eps))


def _describe_block(block, index: int, act: str) -> LayerWeights:
    attn = block.self_attn
    H, dh = attn.num_heads, attn.head_dim
    D = attn.q_proj.weight.shape[1]
    if abs(attn.scale - dh ** -0.5) > 1e-12 * dh ** -0.5:
        raise WeightscopeError(f"layer {index} scales logits by {attn.scale}, not 1/sqrt(head width); not supported")

    def read(lin):  # (D_out, D_in) weight -> (H, D_in, dh)
        return _np(lin.weight).reshape(H, dh, D).transpose(0, 2, 1).copy()

    def bias(lin, n):
        return _np(lin.bias) if lin.bias is not None else np.zeros(n)

    return LayerWeights(
        ln_1=_ln(block.layer_norm1),
        attn=AttentionWeights(
            read_q=read(attn.q_proj), read_k=read(attn.k_proj), read_v=read(attn.v_proj),
            write_o=_np(attn.out_proj.weight).T.reshape(H, dh, D).copy(),
            bias_q=bias(attn.q_proj, D).reshape(H, dh), bias_k=bias(attn.k_proj, D).reshape(H, dh),
            bias_v=bias(attn.v_proj, D).reshape(H, dh), bias_o=bias(attn.out_proj, D),
        ),
        ln_2=_ln(block.layer_norm2),
        mlp_in=_np(block.mlp.fc1.weight).T.copy(),
        mlp_in_bias=bias(block.mlp.fc1, block.mlp.fc1.weight.shape[0]),
        mlp_out=_np(block.mlp.fc2.weight).T.copy(),
        mlp_out_bias=bias(block.mlp.fc2, D),
        activation=act,
    )


def write_attention(model: torch.nn.Module, layer: int, attn: AttentionWeights) -> None:
    """Write per-head factors and biases of ``attn`` into encoder layer ``layer`` of ``model`` (in place).

    The inverse of ``describe`` for one block; values are cast to the parameters' dtype. The caller owns ``model``.
    """
    vm, _ = _tower(model)
    mod = vm.encoder.layers[layer].self_attn
    H, D, dh = attn.read_v.shape
    pairs = [(mod.q_proj, attn.read_q, attn.bias_q), (mod.k_proj, attn.read_k, attn.bias_k),
             (mod.v_proj, attn.read_v, attn.bias_v)]
    with torch.no_grad():
        for lin, read, b in pairs:
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(read.transpose(0, 2, 1).reshape(H * dh, D))))
            _write_bias(lin, b.ravel(), layer)
        mod.out_proj.weight.copy_(torch.from_numpy(np.ascontiguousarray(attn.write_o.reshape(H * dh, D).T)))
        _write_bias(mod.out_proj, attn.bias_o, layer)


def _write_bias(lin: torch.nn.Linear, value: np.ndarray, layer: int) -> None:
    if lin.bias is not None:
        lin.bias.copy_(torch.from_numpy(np.ascontiguousarray(value)))
    elif np.any(value):
        raise WeightscopeError(f"layer {layer} has no bias to hold the edited bias")


def block_modules(model: torch.nn.Module, prefix: str = "") -> dict:
    """Hook points of the residual blocks, as :func:`weightscope.models.adapters.openclip_vit.block_modules` returns them."""
    vm, _ = _tower(model)
    base = "vision_model." if hasattr(model, "vision_model") else ""
    cfg = getattr(model.config, "vision_config", model.config)
    g = int(cfg.image_size) // int(cfg.patch_size)
    return {"names": [f"{prefix}{base}encoder.layers.{i}" for i in range(len(vm.encoder.layers))],
            "batch_first": True, "grid": (g, g), "image_size": (int(cfg.image_size),) * 2}


def encode_image(model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """The model's own image features (N, E) from preprocessed pixels (N, 3, S, S) (``get_image_features``, or the
    ``image_embeds`` of a CLIPVisionModelWithProjection)."""
    if hasattr(model, "get_image_features"):
        out = model.get_image_features(pixel_values=pixels)
        return out if torch.is_tensor(out) else out.pooler_output
    return model(pixel_values=pixels).image_embeds


# ------------------------------------------------------------------------------------------------ loading

def _check_config(folder: Path) -> None:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightscopeError(f"{folder / 'config.json'} is not valid JSON ({type(err).__name__})") from None
    kind = config.get("model_type")
    if kind not in ("clip", "clip_vision_model"):
        raise WeightscopeError(
            f"{folder} holds a transformers {kind!r} model; weightscope reads CLIP models (model_type 'clip' or "
            "'clip_vision_model': CLIPModel, CLIPVisionModelWithProjection)")
    if not any((folder / f).is_file() for f in ("model.safetensors", "pytorch_model.bin",
                                                 "model.safetensors.index.json", "pytorch_model.bin.index.json")):
        raise WeightscopeError(f"{folder} has config.json but no weights (model.safetensors or pytorch_model.bin)")


def _model_class(transformers, source) -> type:
    cfg = transformers.AutoConfig.from_pretrained(source)
    if cfg.model_type == "clip":
        return transformers.CLIPModel
    if cfg.model_type == "clip_vision_model":
        return transformers.CLIPVisionModelWithProjection
    raise WeightscopeError(f"{source} is a transformers {cfg.model_type!r} model; weightscope reads CLIP models")


def load_folder(folder, tokenizer=None):
    """A LoadedModel from a local save_pretrained folder (config.json + model.safetensors / pytorch_model.bin)."""
    transformers = transformers_module()
    folder = Path(folder)
    _check_config(folder)
    cls = _model_class(transformers, str(folder))
    try:
        model = cls.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, RuntimeError) as err:
        raise WeightscopeError(f"transformers could not load {folder}: {str(err).splitlines()[0][:200]}") from None
    return _loaded(model, tokenizer, f"hf:{folder.resolve().name}", str(folder), folder)


def load_hub(name: str, tokenizer=None):
    """A LoadedModel from a Hugging Face hub name through transformers' own loader (cache first)."""
    transformers = transformers_module()
    try:
        model = _model_class(transformers, name).from_pretrained(name)
    except (OSError, ValueError) as err:
        from huggingface_hub import constants

        why = ("the model hub is off (HF_HUB_OFFLINE) and no cached copy exists" if constants.is_offline_mode()
               else str(err).splitlines()[0][:160])
        raise WeightscopeError(f"cannot load transformers model {name!r} (no local folder of that name either): "
                               f"{why}; download it once online, or pass a local folder with config.json and "
                               "model.safetensors") from None
    return _loaded(model, tokenizer, f"hf:{name}", name, None)


def combine(vision: torch.nn.Module, text: torch.nn.Module) -> torch.nn.Module:
    """One ``CLIPModel`` holding copies of a ``CLIPVisionModelWithProjection`` and a ``CLIPTextModelWithProjection``
    (their weights as they are, ``logit_scale`` at its default), so every analysis sees one model.

    Raises WeightscopeError when the pair is not of those classes or their projections disagree in width.
    """
    transformers = transformers_module()
    if not (isinstance(vision, transformers.CLIPVisionModelWithProjection)
            and isinstance(text, transformers.CLIPTextModelWithProjection)):
        raise WeightscopeError(f"a model pair must be (CLIPVisionModelWithProjection, CLIPTextModelWithProjection), "
                               f"got ({type(vision).__name__}, {type(text).__name__})")
    if vision.visual_projection.out_features != text.text_projection.out_features:
        raise WeightscopeError(f"the pair's joint widths differ: vision {vision.visual_projection.out_features}, "
                               f"text {text.text_projection.out_features}; they are not one CLIP model")
    config = transformers.CLIPConfig(text_config=text.config.to_dict(), vision_config=vision.config.to_dict(),
                                     projection_dim=vision.visual_projection.out_features)
    model = transformers.CLIPModel(config)
    state = {**vision.state_dict(), **text.state_dict()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"logit_scale"}:
        raise WeightscopeError(f"the pair does not fill a CLIPModel: missing {sorted(missing)[:3]}, unexpected "
                               f"{sorted(unexpected)[:3]}")
    return model.to(next(vision.parameters()).dtype).eval()


def loaded_from_object(model, tokenizer=None):
    """A LoadedModel around an already-constructed transformers CLIP model (used as is, not copied), or around
    :func:`combine` of a (vision, text) pair."""
    if isinstance(model, (tuple, list)):
        if len(model) != 2:
            raise WeightscopeError(f"a model pair is (CLIPVisionModelWithProjection, CLIPTextModelWithProjection); "
                                   f"got {len(model)} models")
        model = combine(*model)
    _tower(model)
    return _loaded(model, tokenizer, getattr(model, "_weightscope_name", f"hf:{type(model).__name__}"), "object",
                   None)


def _loaded(model, tokenizer, name: str, source: str, folder: Path | None):
    from ..checkpoints import record_provenance
    from ..loaded import LoadedModel
    from .hf_clip_text import default_tokenizer

    if getattr(model, "_weightscope_provenance", None) is None:
        record_provenance(model, name, {}, {"model": name, "source": source})
    return LoadedModel(model.eval(), tokenizer or default_tokenizer(model, folder), image_preprocess(model, folder),
                       name, source)


def image_preprocess(model, folder: Path | None):
    """PIL image -> pixels (3, S, S) as the model was trained on: the folder's ``preprocessor_config.json``
    (CLIPImageProcessor: shortest side to ``size``, centre crop, ``image_mean`` / ``image_std``), else OpenAI CLIP's
    (shortest side to the model's image size, bicubic, centre crop, OpenAI's mean and std). Built with open_clip's
    ``image_transform``."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from open_clip.transform import image_transform

    cfg = getattr(model.config, "vision_config", model.config)
    size, mean, std = int(cfg.image_size), OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    path = Path(folder) / "preprocessor_config.json" if folder is not None else None
    if path is not None and path.is_file():
        try:
            pre = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise WeightscopeError(f"{path} is not valid JSON ({type(err).__name__})") from None
        crop = pre.get("crop_size", size)
        size = int(crop.get("height", size) if isinstance(crop, dict) else crop)
        mean, std = tuple(pre.get("image_mean", mean)), tuple(pre.get("image_std", std))
    return image_transform(size, is_train=False, mean=mean, std=std, resize_mode="shortest",
                           interpolation="bicubic")


# ------------------------------------------------------------------------------------------------ saving

def save_folder(model, out, *, selection: dict | None = None, source_folder=None, overwrite: bool = False) -> Path:
    """Save an (edited) transformers CLIP model as a folder ``out`` that ``from_pretrained`` loads: config.json and
    model.safetensors (transformers' own ``save_pretrained``), the tokenizer/preprocessor files of
    ``source_folder`` when it has them, and ``weightscope.json`` (the edit record, as a checkpoint sidecar holds).

    Written into a temporary sibling folder and renamed into place: the folder appears whole or not at all.
    Raises WeightscopeError when ``out`` exists (unless ``overwrite``) or is the source folder.
    """
    from ..checkpoints import sidecar_record, unwrap_module
    from ...core.fileio import json_default

    out = Path(out)
    module = unwrap_module(getattr(model, "model", model))
    if source_folder is not None and out.exists() and out.resolve() == Path(source_folder).resolve():
        raise WeightscopeError(f"refusing to write the edited model over its input folder {out}; choose another --out")
    if out.exists() and not overwrite:
        raise WeightscopeError(f"{out} already exists; choose another output folder or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        module.save_pretrained(str(tmp), safe_serialization=True)
        for name in SIDE_FILES if source_folder is not None else ():
            if (Path(source_folder) / name).is_file():
                shutil.copyfile(Path(source_folder) / name, tmp / name)
        digest = hashlib.sha256()
        for shard in sorted(tmp.glob("*.safetensors")):  # one file, or transformers' shards of a large model
            digest.update(shard.read_bytes())
        record = sidecar_record(module, digest.hexdigest(), selection)
        (tmp / RECORD).write_text(json.dumps(record, indent=2, default=json_default) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
