"""Step 1 of the pipeline: get an open_clip model from a name + pretrained tag, a local checkpoint, or an object.

Every failure a user can cause (unknown name, unknown tag, missing or truncated file, a checkpoint of another
architecture) becomes a one-line :class:`WeightscopeError`.
"""
from __future__ import annotations

import contextlib
import difflib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import WeightscopeError

BUNDLED = "bundled"


@dataclass
class LoadedModel:
    """An open_clip model in eval mode with what is needed to use it.

    model: the open_clip CLIP module; tokenizer: callable list[str] -> LongTensor (N, context);
    preprocess: PIL image -> tensor transform (None when unknown); name: architecture name (open_clip config);
    source: where the weights came from (pretrained tag, checkpoint path, "random-init", or "object").
    """

    model: torch.nn.Module
    tokenizer: Any
    preprocess: Any
    name: str
    source: str

    @property
    def identity(self) -> str:
        """A human-readable id: architecture plus weight source."""
        return f"{self.name}:{self.source}"


def _open_clip():
    import open_clip  # imported lazily: it is slow to import and not every function needs it

    return open_clip


def _check_model_name(name: str) -> None:
    open_clip = _open_clip()
    if name.startswith(("hf-hub:", "local-dir:")):
        return
    known = open_clip.list_models()
    if name not in known:
        from .shapes.bundled import MODEL_NAME

        close = difflib.get_close_matches(name, [BUNDLED, MODEL_NAME, *known], n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "see open_clip.list_models() for the names"
        raise WeightscopeError(f"unknown model name {name!r}: {hint}")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file (.safetensors, or a torch .pt/.pth/.bin) into a flat state dict on the CPU.

    Accepts open_clip checkpoints saved with a ``state_dict`` wrapper and DataParallel ``module.`` prefixes.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightscopeError(f"checkpoint file not found: {path} (give the path of a .safetensors, .pt or .bin file)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path), device="cpu")
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # each reader raises its own type for truncated or foreign files
        raise WeightscopeError(
            f"cannot read checkpoint {path}: the file is truncated or not a checkpoint ({type(err).__name__}); "
            "expected a complete .safetensors or torch state-dict file"
        ) from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightscopeError(f"checkpoint {path} does not hold a state dict of tensors")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def load_state_dict_strict(model: torch.nn.Module, sd: dict[str, torch.Tensor], what: str, arch: str) -> None:
    """Load ``sd`` into ``model``, turning key or shape mismatches into one readable line."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            k = mismatched[0]
            parts.append(f"{len(mismatched)} shape mismatches (e.g. {k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)})")
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        raise WeightscopeError(
            f"{what} does not match architecture {arch!r}: {'; '.join(parts)} - pass the model name it was trained with"
        )
    with torch.no_grad():
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=True)


def load_model(
    model: str | torch.nn.Module | None = None,
    pretrained: str | None = None,
    checkpoint: str | Path | None = None,
    tokenizer: Any = None,
) -> LoadedModel:
    """Load a CLIP model for inspection.

    - ``load_model()`` or ``load_model("bundled")``: the shapes-world model shipped with weightscope (offline).
      ``load_model("bundled", pretrained="tuned")`` gives its fine-tuned sibling.
    - ``load_model("ViT-B-16", pretrained="openai")``: open_clip's own download path (needs the model hub).
    - ``load_model("ViT-B-16")``: the architecture with random weights (``source == "random-init"``).
    - ``load_model("ViT-B-16", checkpoint="ft.safetensors")``: weights from a local file.
    - ``load_model(clip_module)``: an already-constructed open_clip model (used as is, not copied).
    """
    open_clip = _open_clip()
    if isinstance(model, torch.nn.Module):
        if pretrained is not None or checkpoint is not None:
            raise WeightscopeError("pass either a model object or a name with pretrained/checkpoint, not both")
        name = getattr(model, "_weightscope_name", type(model).__name__)
        tok = tokenizer or open_clip.get_tokenizer("ViT-B-32")
        return LoadedModel(model.eval(), tok, None, name, "object")
    if model is None or model == BUNDLED:
        return _load_bundled(pretrained or "base", checkpoint)
    if not isinstance(model, str):
        raise WeightscopeError(f"model must be an open_clip model name or module, got {type(model).__name__}")
    if pretrained is not None and checkpoint is not None:
        raise WeightscopeError("pass either pretrained (a tag) or checkpoint (a file), not both")
    _check_model_name(model)
    if pretrained is not None and not Path(str(pretrained)).is_file():
        return _load_pretrained(model, pretrained)
    checkpoint = checkpoint if checkpoint is not None else pretrained
    # open_clip warns that the model is randomly initialised; untrue when a checkpoint is loaded next
    quiet = _drop_log_records("No pretrained weights loaded") if checkpoint is not None else contextlib.nullcontext()
    with quiet:
        net, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=None)
    source = "random-init"
    if checkpoint is not None:
        load_state_dict_strict(net, read_state_dict(checkpoint), f"checkpoint {checkpoint}", model)
        source = str(checkpoint)
    net._weightscope_name = model
    return LoadedModel(net.eval(), tokenizer or open_clip.get_tokenizer(model), preprocess, model, source)


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


def _load_pretrained(name: str, tag: str) -> LoadedModel:
    open_clip = _open_clip()
    tags = open_clip.list_pretrained_tags_by_model(name)
    if not name.startswith("hf-hub:") and tag not in tags:
        hint = f"known tags: {', '.join(tags)}" if tags else "open_clip has no pretrained weights for it; use checkpoint="
        raise WeightscopeError(f"unknown pretrained tag {tag!r} for {name}: {hint}")
    try:
        net, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=tag)
    except Exception as err:  # network errors come from several libraries
        raise WeightscopeError(
            f"could not fetch {name}/{tag} ({type(err).__name__}): no access to the model hub? "
            "download the weights elsewhere and pass checkpoint=PATH"
        ) from None
    net._weightscope_name = name
    return LoadedModel(net.eval(), open_clip.get_tokenizer(name), preprocess, name, tag)


def _load_bundled(which: str, checkpoint) -> LoadedModel:
    from .shapes import bundled

    if checkpoint is not None:
        raise WeightscopeError("the bundled model takes pretrained='base' or 'tuned', not a checkpoint file")
    if which not in ("base", "tuned"):
        raise WeightscopeError(f"the bundled model has checkpoints 'base' and 'tuned', not {which!r}")
    bundled.register()
    loaded = load_model(bundled.MODEL_NAME, checkpoint=bundled.checkpoint_path(which))
    loaded.source = f"bundled:{which}"
    return loaded
