"""Step 1 of the pipeline: get an open_clip model from a name + pretrained tag, a local checkpoint, or an object.

Every failure a user can cause (unknown name, unknown tag, missing, truncated or unsafe file, a checkpoint of
another architecture, a model hub that cannot be reached) becomes a one-line :class:`WeightscopeError`.
File layouts are handled by :mod:`weightscope.models.checkpoints`; a checkpoint weightscope wrote loads by path alone
(its sidecar names the architecture).
"""
from __future__ import annotations

import contextlib
import difflib
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from .checkpoints import SUFFIXES, architecture, fit_state_dict, load_strict, read_checkpoint, read_sidecar, record_provenance, unwrap_module
from ..core.errors import WeightscopeError
from .loaded import LoadedModel  # noqa: F401  (re-exported: load_model returns it)

BUNDLED = "bundled"


def _open_clip():
    import open_clip  # imported lazily: it is slow to import and not every function needs it

    return open_clip


def _check_model_name(name: str) -> None:
    open_clip = _open_clip()
    if name.startswith(("hf-hub:", "local-dir:")):
        return
    known = open_clip.list_models()
    if name == BUNDLED:
        raise WeightscopeError("the bundled shapes-world model is loaded by weightscope.load_model() (the top-level "
                               "API) or the command line, not by weightscope.models.load")
    if name not in known:
        close = difflib.get_close_matches(name, [*known, BUNDLED], n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "see open_clip.list_models() for the names"
        if Path(name).is_dir():
            hint = f"{name} is a folder: write local-dir:{name} for a folder holding an open_clip_config.json"
        raise WeightscopeError(f"unknown model name {name!r}: {hint}")


def _is_path(name: str) -> bool:
    return not name.startswith(("hf-hub:", "local-dir:")) and (
        Path(name).is_file() or name.lower().endswith(SUFFIXES))


def load_model(
    model: str | torch.nn.Module | None = None,
    pretrained: str | None = None,
    checkpoint: str | Path | None = None,
    tokenizer: Any = None,
    trust_checkpoint: bool = False,
    lazy: bool = False,
) -> LoadedModel:
    """Load a CLIP model for inspection.

    - The bundled shapes-world model is loaded by ``weightscope.load_model()`` (``weightscope.bundled``), which
      hands every other spec to this function.
    - ``load_model("ViT-B-16", pretrained="openai")``: open_clip's own download path (needs the model hub). Tags
      trained with QuickGELU build the model with QuickGELU (a warning says so).
    - ``load_model("ViT-B-16")``: the architecture with random weights (``source == "random-init"``), drawn with a
      fixed seed part by part (:mod:`weightscope.models.lazy`): the same in every run, each vision block
      independent of the others. ``lazy=True`` leaves the vision blocks unbuilt until an analysis asks for them
      (``inspect_model`` builds and frees one block at a time); other sources ignore it.
    - ``load_model("ViT-B-16", checkpoint="ft.safetensors")``: weights from a local file, in any layout open_clip
      loads (nested ``state_dict``/``model``/``ema`` dicts, ``module.``/``_orig_mod.``/shared prefixes,
      OpenAI's TorchScript archives). A file saved for another image size or context length builds the model at
      the saved size (a warning says so).
    - ``load_model("edited.safetensors")``: a checkpoint weightscope wrote, architecture from its sidecar (with the
      architecture's config when it is not a registered open_clip name); ``load_model(checkpoint=...)`` (no name)
      does the same.
    - ``load_model(clip_module)``: an already-constructed open_clip model (used as is, not copied; a
      DataParallel or torch.compile wrapper is looked through).
    - Hugging Face transformers CLIP (``pip install -e ".[hf]"``): a ``CLIPModel`` /
      ``CLIPVisionModelWithProjection`` object, a local ``save_pretrained`` folder (config.json + model.safetensors
      or pytorch_model.bin), a hub id such as ``openai/clip-vit-base-patch32`` (transformers' own loader), or a
      pair ``(CLIPVisionModelWithProjection, CLIPTextModelWithProjection)`` (combined into one CLIPModel).

    tokenizer: a callable, or a path to a downloaded tokenizer folder (see :func:`model_tokenizer`; SigLIP models
    need one offline); default: the model's own.
    trust_checkpoint: unpickle torch files in full (``weights_only=False``), for checkpoints that hold other
    objects than tensors (e.g. training arguments). Off by default: unpickling runs code the file names.
    Raises WeightscopeError for every bad input (one line).
    """
    hf = _load_transformers(model, pretrained, checkpoint, tokenizer)
    if hf is not None:
        return hf
    open_clip = _open_clip()
    if isinstance(model, torch.nn.Module):
        if pretrained is not None or checkpoint is not None:
            raise WeightscopeError("pass either a model object or a name with pretrained/checkpoint, not both")
        module = unwrap_module(model)
        name = getattr(module, "_weightscope_name", type(module).__name__)
        context = getattr(module, "context_length", None) or getattr(getattr(module, "text", None), "context_length",
                                                                     None)
        tok = model_tokenizer(name, tokenizer, context) if tokenizer is not None else open_clip.get_tokenizer("ViT-B-32")
        return LoadedModel(module.eval(), tok, None, name, "object")
    if model is not None and not isinstance(model, str):
        raise WeightscopeError(f"model must be an open_clip model name or module, got {type(model).__name__}")
    if pretrained is not None and checkpoint is not None:
        raise WeightscopeError("pass either pretrained (a tag) or checkpoint (a file), not both")
    if model is not None and _is_path(model):
        if pretrained is not None or checkpoint is not None:
            raise WeightscopeError(f"model {model} is a checkpoint file; give no pretrained/checkpoint with it")
        return _load_file(None, model, tokenizer, trust_checkpoint)
    tag = pretrained if pretrained is not None and not Path(str(pretrained)).is_file() else None
    if pretrained is not None and tag is None:
        checkpoint = pretrained  # open_clip takes a file as pretrained too
    if model is None and checkpoint is not None:
        return _load_file(None, checkpoint, tokenizer, trust_checkpoint)
    if model is None:
        raise WeightscopeError("give a model: an open_clip name, a checkpoint file, a transformers folder or a module "
                               "(weightscope.load_model() with no argument loads the bundled shapes-world model)")
    _check_model_name(model)
    if tag is not None:
        return _load_pretrained(model, tag, tokenizer)
    if checkpoint is not None:
        return _load_file(model, checkpoint, tokenizer, trust_checkpoint)
    if model.startswith(("hf-hub:", "local-dir:")):
        net, preprocess, tok = _build(model, {}, tokenizer, quiet=False)
        return _loaded(net, tok, preprocess, model, {}, {"model": model, "source": _schema_source(model)})
    from .lazy import build_random_init

    net, preprocess = build_random_init(model, {}, open_clip, lazy,
                                        quiet=lambda: _drop_log_records("No pretrained weights loaded"))
    tok = model_tokenizer(model, tokenizer)
    return _loaded(net, tok, preprocess, model, {}, {"model": model, "source": "random-init"})


def _load_transformers(model, pretrained, checkpoint, tokenizer) -> LoadedModel | None:
    """A Hugging Face transformers CLIP (object, local folder with config.json, or ORG/NAME hub id), else None."""
    from .adapters import hf_clip

    unwrapped = unwrap_module(model) if isinstance(model, torch.nn.Module) else model
    pair = isinstance(model, (tuple, list)) and any(hf_clip.is_hf_model(m) for m in model)
    if not (hf_clip.is_hf_model(unwrapped) or hf_clip.is_hf_spec(model) or pair):
        return None
    if pretrained is not None or checkpoint is not None:
        raise WeightscopeError(f"{model if isinstance(model, str) else type(unwrapped).__name__} is a transformers "
                               "model that brings its own weights; give no pretrained/checkpoint with it")
    if isinstance(model, torch.nn.Module) or pair:
        return hf_clip.loaded_from_object(unwrapped, tokenizer)
    return hf_clip.load_folder(model, tokenizer) if Path(model).is_dir() else hf_clip.load_hub(model, tokenizer)


def register_config(name: str, config: dict) -> None:
    """Make ``name`` an open_clip model name with ``config`` (its model_cfg: embed_dim, vision_cfg, text_cfg), unless
    open_clip already knows it. Used for architectures that are no registered name (a custom config, the bundled
    model): their checkpoints' sidecars carry the config, so they load by path alone."""
    import tempfile

    open_clip = _open_clip()
    if name in open_clip.list_models():
        return
    if not isinstance(config, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(config):
        raise WeightscopeError(f"the recorded config of {name!r} is not an open_clip model config "
                               "(embed_dim, vision_cfg, text_cfg)")
    with tempfile.TemporaryDirectory() as tmp:  # open_clip reads configs from files, named after the model
        path = Path(tmp) / f"{name}.json"
        path.write_text(json.dumps(config), encoding="utf-8")
        open_clip.add_model_config(path)


def _loaded(net, tok, preprocess, name: str, options: dict, source: dict) -> LoadedModel:
    """The LoadedModel, with the provenance a saved copy records (weightscope.models.checkpoints.sidecar_record),
    including the architecture's config so that a copy loads by path even where the name is not registered."""
    config = None
    if not name.startswith(("hf-hub:", "local-dir:")):
        config = _open_clip().get_model_config(name)
    record_provenance(net, name, options, source, config=config)
    return LoadedModel(net.eval(), tok, preprocess, name, source["source"])


def _build(name: str, options: dict, tokenizer, quiet: bool):
    """(model, preprocess, tokenizer) of architecture ``name`` with random weights and open_clip ``options``."""
    open_clip = _open_clip()
    # open_clip warns that the model is randomly initialised; untrue when a checkpoint is loaded next
    drop = _drop_log_records("No pretrained weights loaded") if quiet else contextlib.nullcontext()
    try:
        with drop:
            net, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None, **options)
    except Exception as err:
        if not name.startswith(("hf-hub:", "local-dir:")):
            raise
        raise WeightscopeError(f"cannot load {name}: {_hub_problem(name, err)}") from None
    return net, preprocess, model_tokenizer(name, tokenizer, options.get("force_context_length"))


def model_tokenizer(name: str, tokenizer, context_length: int | None = None):
    """The tokenizer of open_clip architecture ``name``: ``tokenizer`` itself when it is a callable, a tokenizer
    built from a local folder (or file) when it is a path, else open_clip's ``get_tokenizer(name)``.

    A path is read with transformers' ``AutoTokenizer`` through open_clip's ``HFTokenizer``, with the context length
    and cleaning options of the model's config (``text_cfg``): this is how SigLIP / SigLIP 2 models, whose tokenizer
    open_clip fetches from the Hugging Face hub, are built offline from a downloaded tokenizer folder (tokenizer.json
    or spiece.model with tokenizer_config.json). Raises WeightscopeError (one line) for a missing path, an unreadable
    tokenizer, or a hub tokenizer that cannot be fetched.
    """
    open_clip = _open_clip()
    if tokenizer is not None and not isinstance(tokenizer, (str, Path)):
        return tokenizer
    known = not name.startswith(("hf-hub:", "local-dir:")) and name in open_clip.list_models()
    text_cfg = (open_clip.get_model_config(name) or {}).get("text_cfg", {}) if known else {}
    context = context_length or text_cfg.get("context_length")
    if tokenizer is not None:
        path = Path(tokenizer)
        if not path.exists():
            raise WeightscopeError(f"tokenizer {path} not found: give a folder holding the model's tokenizer files "
                                   "(tokenizer.json, or spiece.model with tokenizer_config.json)")
        try:
            import transformers  # noqa: F401  (HFTokenizer reads the folder with it)
        except ImportError:
            raise WeightscopeError('a tokenizer folder is read with transformers: pip install -e ".[hf]"') from None
        from open_clip.tokenizer import HFTokenizer

        try:
            return HFTokenizer(str(path), context_length=context or 77, **text_cfg.get("tokenizer_kwargs", {}))
        except Exception as err:  # transformers raises OSError, ValueError or its own errors for unreadable files
            raise WeightscopeError(f"cannot read a tokenizer from {path}: {type(err).__name__}: "
                                   f"{(str(err).splitlines() or [''])[0][:160]}") from None
    try:
        return open_clip.get_tokenizer(name, context_length=context_length)
    except Exception as err:
        hub = text_cfg.get("hf_tokenizer_name")
        if not hub:
            raise
        raise WeightscopeError(
            f"the tokenizer of {name} comes from the Hugging Face hub ({hub}) and could not be fetched "
            f"({type(err).__name__}); download it once (huggingface-cli download {hub} --local-dir DIR) and pass "
            "tokenizer=DIR (on the command line --tokenizer DIR)") from None


def _schema_source(name: str) -> str:
    """Source of a hf-hub:/local-dir: model: the name, or random-init for a folder without weights."""
    if name.startswith("local-dir:"):
        folder = Path(name[len("local-dir:"):])
        if not any(p.suffix in (".safetensors", ".bin", ".pth") for p in folder.iterdir()):
            warnings.warn(f"weightscope: {folder} holds no weights file (.safetensors, .bin, .pth); "
                          "the model has random weights", stacklevel=3)
            return "random-init"
    return name


def _hub_problem(name: str, err: Exception) -> str:
    """One line saying why open_clip could not build a hf-hub:/local-dir: model (checked cheaply where possible)."""
    if name.startswith("local-dir:"):
        folder = Path(name[len("local-dir:"):])
        config = folder / "open_clip_config.json"
        if not folder.is_dir():
            return f"folder {folder} not found"
        if not config.is_file():
            return f"folder {folder} has no open_clip_config.json (the model config open_clip needs)"
        try:
            if "model_cfg" not in json.loads(config.read_text(encoding="utf-8")):
                return f"{config} has no 'model_cfg' entry"
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            return f"{config} is not valid JSON ({type(exc).__name__})"
    else:
        from huggingface_hub import constants

        if constants.is_offline_mode():
            return "no cached copy and the model hub is off (HF_HUB_OFFLINE is set); download it once online"
    cause = err
    while cause.__cause__ is not None:
        cause = cause.__cause__
    detail = (str(cause).splitlines() or [""])[0][:160]
    return f"{type(cause).__name__}: {detail} (no cached copy and no access to the model hub?)"


def _load_file(name: str | None, path, tokenizer, trust: bool) -> LoadedModel:
    """A checkpoint file, with architecture ``name`` (None: from its sidecar)."""
    raw = read_checkpoint(path, trust=trust)
    try:
        recorded = architecture(read_sidecar(path))
    except WeightscopeError as err:
        if name is None:
            raise
        warnings.warn(f"weightscope: {err}; loading as {name}", stacklevel=3)  # the name given is enough
        recorded = None
    if name is None:
        if recorded is None:
            raise WeightscopeError(
                f"checkpoint {path} has no weightscope sidecar ({Path(path).name}.json) that names its "
                f"architecture; give the open_clip model name: load_model(NAME, checkpoint=PATH), on the command line "
                f"NAME --checkpoint {path}")
        name = recorded["name"]
    if recorded and recorded["name"] == name and recorded.get("config"):
        register_config(name, recorded["config"])  # a custom architecture: the sidecar carries its config
    _check_model_name(name)
    options = dict(recorded["options"]) if recorded and recorded["name"] == name else {}
    if raw.quick_gelu and not options.get("force_quick_gelu"):
        warnings.warn(f"weightscope: {path} is a TorchScript archive of a QuickGELU model (OpenAI's original "
                      f"format); building {name} with QuickGELU", stacklevel=3)
        options["force_quick_gelu"] = True
    net, preprocess, tok = _build(name, options, tokenizer, quiet=True)
    sd = fit_state_dict(net, raw.state_dict)
    from .adapters.openclip_checkpoint import saved_geometry

    geometry = saved_geometry(net, sd)
    if geometry:
        said = ", ".join(f"{k.removeprefix('force_')} {v}" for k, v in geometry.items())
        warnings.warn(f"weightscope: {path} was saved for other input sizes ({said}); building {name} at the saved "
                      "size instead of resizing its position embeddings", stacklevel=3)
        options.update(geometry)
        net, preprocess, tok = _build(name, options, tokenizer, quiet=True)
        sd = fit_state_dict(net, raw.state_dict)
    hint = (f"its sidecar names {recorded['name']!r}; pass that name" if recorded and recorded["name"] != name
            else "")
    load_strict(net, sd, f"checkpoint {path}", name, hint)
    return _loaded(net, tok, preprocess, name, options,
                   {"model": name, "source": str(path), "checkpoint": str(path)})


@contextlib.contextmanager
def _drop_log_records(prefix: str):
    """Silence root-logger records (open_clip logs through ``logging.warning``) that start with prefix."""
    def keep(record):
        return not str(record.msg).startswith(prefix)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _load_pretrained(name: str, tag: str, tokenizer) -> LoadedModel:
    open_clip = _open_clip()
    tags = open_clip.list_pretrained_tags_by_model(name)
    if name.startswith(("hf-hub:", "local-dir:")):
        raise WeightscopeError(f"{name} brings its own weights; give no pretrained tag with it")
    if tag not in tags:
        hint = (f"known tags: {', '.join(tags)}" if tags
                else "open_clip has no pretrained weights for it; use checkpoint=")
        raise WeightscopeError(f"unknown pretrained tag {tag!r} for {name}: {hint}")
    _check_fetchable(name, tag)   # before anything is said or built: a download that cannot happen fails now
    options = {}
    if open_clip.get_pretrained_cfg(name, tag).get("quick_gelu") and not open_clip.get_model_config(name).get(
            "quick_gelu"):
        # open_clip only warns and builds nn.GELU; the weights were trained with x * sigmoid(1.702 x)
        warnings.warn(f"weightscope: {name} '{tag}' weights were trained with QuickGELU; building the model with "
                      "QuickGELU (open_clip's force_quick_gelu) instead of GELU", stacklevel=3)
        options["force_quick_gelu"] = True
    try:
        net, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=tag, **options)
    except Exception as err:  # network errors come from several libraries
        raise WeightscopeError(f"could not fetch {name}/{tag}: {_hub_problem(name, err)}; or download the weights "
                               "elsewhere and pass checkpoint=PATH") from None
    tok = model_tokenizer(name, tokenizer)
    return _loaded(net, tok, preprocess, name, options, {"model": name, "source": tag, "pretrained": tag})


def _reachable(host: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host``:443 opens within ``timeout`` s (DNS included: run in a thread, as a
    resolver can hang longer than any socket timeout)."""
    import socket
    import threading

    ok: list[bool] = []

    def probe():
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            ok.append(True)
        except OSError:
            ok.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(ok and ok[0])


def _cached_weights(cfg: dict) -> bool:
    """Whether open_clip's download of pretrained ``cfg`` is already in the local cache (no network used)."""
    import os
    from urllib.parse import urlparse

    if cfg.get("file"):
        return Path(cfg["file"]).is_file()
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(hub)
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if filename.endswith((".bin", ".pth", ".pt")):
            names.insert(0, filename.rsplit(".", 1)[0] + ".safetensors")
        return any(isinstance(try_to_load_from_cache(repo, n), str) for n in names)
    url = cfg.get("url", "")
    return bool(url) and (Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(urlparse(url).path)).is_file()


def _check_fetchable(name: str, tag: str) -> None:
    """Fail at once, before the model is built, when the weights are not cached and cannot be downloaded (the
    hub switched off by HF_HUB_OFFLINE, or its host unreachable): open_clip would retry for a minute first."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    cfg = _open_clip().get_pretrained_cfg(name, tag)
    if _cached_weights(cfg):
        return
    hub = bool(cfg.get("hf_hub"))
    host = urlparse(constants.ENDPOINT).hostname if hub else urlparse(cfg.get("url", "")).hostname
    if hub and constants.is_offline_mode():
        why = "no cached copy and the model hub is off (HF_HUB_OFFLINE is set)"
    elif host and not _reachable(host):
        why = f"no cached copy and {host} cannot be reached (no network?)"
    else:
        return
    raise WeightscopeError(f"could not fetch {name}/{tag}: {why}; download them once online, or elsewhere and "
                           "pass checkpoint=PATH")
