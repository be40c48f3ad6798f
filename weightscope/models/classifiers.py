"""Any trained torch classifier whose output is its last ``nn.Linear``: loading, preprocessing, features, logits.

SING (METHODS.md section 8; seed 000) needs a classifier as logits = f W^T + b with f the input of its last
linear layer. :func:`load_classifier` gives a :class:`Classifier` from

- a whole ``nn.Module`` pickled by ``torch.save(model, path)``, with ``trust=True`` (unpickling runs code). Its
  preprocessing (image_size, mean, std, class_names; each optional) comes from a JSON sidecar ``<path>.json`` or
  ``<stem>.json`` when there is one, else ImageNet's (224 px, ImageNet mean / std).

Refused with one line: plain state dicts (weights without the architecture cannot compute features), TorchScript
archives (a scripted module takes no Python forward hooks), modules without an ``nn.Linear``, and modules whose
output is not the output of the last ``nn.Linear`` their forward calls (a softmax, a scale or another layer after
it). The last check is by construction: :func:`load_classifier` runs a 2-image probe batch and compares.

The shipped shapes classifiers (``bundled-cnn`` / ``bundled-vit``) and weightscope classifier files
(``NAME.safetensors`` + ``NAME.json``) are read by ``weightscope.bundled.load_classifier``, which builds their
architectures and hands the module to :func:`classifier_from_module`.
"""
from __future__ import annotations

import json
import pickle
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.errors import WeightscopeError
from .linear_heads import LinearHead, linear_head

IMAGENET_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRUST_FLAG = "--trust-checkpoint"
_FORMS = ("give a weightscope classifier (.safetensors with its .json config), a whole nn.Module saved with "
          "torch.save(model, path) (with --trust-checkpoint), or bundled-cnn / bundled-vit")


def preprocess_images(images, image_size: int, mean, std) -> torch.Tensor:
    """uint8 images (N, H, W, 3) or a sequence of PIL images -> float32 (N, 3, S, S), S = ``image_size``.

    Non-square images are centre-cropped to their shorter side; images of another size are resized (bilinear
    with antialiasing); then /255 and normalised by ``mean`` / ``std`` (3 values each, RGB). Raises
    WeightscopeError for anything else (wrong dtype or shape, no images).
    """
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise WeightscopeError(f"expected uint8 images of shape (N, H, W, 3), got {images.dtype} {images.shape}")
        batches = [images]
    elif isinstance(images, Sequence) and all(hasattr(im, "convert") for im in images):
        batches = [np.asarray(im.convert("RGB"))[None] for im in images]
    else:
        raise WeightscopeError(f"expected a uint8 array (N, H, W, 3) or a list of PIL images, got "
                               f"{type(images).__name__}")
    if not batches or not len(batches[0]):
        raise WeightscopeError("no images to preprocess; give at least one")
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    out = []
    for batch in batches:
        x = torch.tensor(batch).permute(0, 3, 1, 2).float().div_(255.0)  # a copy: inputs may be read-only
        h, w = x.shape[-2:]
        if h != w:
            side = min(h, w)
            top, left = (h - side) // 2, (w - side) // 2
            x = x[..., top:top + side, left:left + side]
        if x.shape[-1] != image_size:
            x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear",
                                                align_corners=False, antialias=True)
        # one memory layout whatever the input's strides: convolutions pick kernels by layout, and the last
        # bits differ between kernels
        out.append(((x - m) / s).contiguous())
    return out[0] if len(out) == 1 else torch.cat(out)



class StateDictOnly(WeightscopeError):
    """The file holds weights but no architecture: its head's geometry can be read (``heads.linear_head``), its
    features cannot be computed."""


@dataclass
class Classifier:
    """A classifier ready for SING: module (eval mode, CPU, float32), its head (the last nn.Linear its forward
    calls, named ``head_name``), class names, the input it expects (image_size px, RGB mean / std of [0, 1]
    values) and where it came from (``source``: a path or "bundled", and where the preprocessing came from)."""

    name: str
    module: torch.nn.Module
    head: LinearHead
    class_names: tuple[str, ...]
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str
    head_name: str

    def preprocess(self, images) -> torch.Tensor:
        """The module's input for ``images`` (see :func:`preprocess_images`): float32 (N, 3, S, S)."""
        return preprocess_images(images, self.image_size, self.mean, self.std)

    def features_and_logits(self, images, batch_size: int = 256, progress: bool = False):
        """(features (N, F), logits (N, C)), both float64 numpy, from one forward pass per batch: features are
        the input of the head's nn.Linear (a forward hook), logits the module's own output.

        images: uint8 (N, H, W, 3), a sequence of PIL images (each batch is preprocessed when it is run, so N
        may be large), or an already preprocessed float tensor (N, 3, S, S).
        """
        from tqdm import tqdm

        if isinstance(images, torch.Tensor):
            if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
                raise WeightscopeError(f"a preprocessed input must be a float tensor (N, 3, S, S), got "
                                       f"{images.dtype} {tuple(images.shape)}")
        else:  # bad input fails here, in one line, before any work
            self.preprocess(images[:1] if isinstance(images, (np.ndarray, Sequence)) else images)
        if batch_size < 1:
            raise WeightscopeError(f"batch_size must be >= 1, got {batch_size}")
        head = dict(self.module.named_modules())[self.head_name]
        feats, logits, seen = [], [], []
        handle = head.register_forward_hook(lambda mod, args, out: seen.append(args[0].detach()))
        try:
            with torch.no_grad():
                starts = range(0, len(images), batch_size)
                for s in tqdm(starts, desc=f"{self.name} features", disable=not progress or len(starts) < 2):
                    batch = images[s:s + batch_size]
                    seen.clear()
                    logits.append(self.module(batch if isinstance(batch, torch.Tensor)
                                              else self.preprocess(batch)).double())
                    feats.append(seen[-1].double())
        finally:
            handle.remove()
        return torch.cat(feats).numpy(), torch.cat(logits).numpy()

    def features(self, images, batch_size: int = 256, progress: bool = False) -> np.ndarray:
        """(N, F) float64: the input of the head's nn.Linear for each image (see :meth:`preprocess`)."""
        return self.features_and_logits(images, batch_size, progress)[0]

    def logits(self, images, batch_size: int = 256, progress: bool = False) -> np.ndarray:
        """(N, C) float64: the module's own output for each image."""
        return self.features_and_logits(images, batch_size, progress)[1]


def load_classifier(spec: str, *, trust: bool = False, class_names: Sequence[str] | None = None) -> Classifier:
    """A :class:`Classifier` from ``spec`` (see the module docstring for what it may be).

    trust: allow unpickling a whole module (runs code the file names). class_names: override the names of the
    config / sidecar (must match the head's rows). Raises WeightscopeError, one line, for a missing or
    unreadable file, a state dict, a TorchScript archive, an untrusted pickle, or a module whose output is
    not its last nn.Linear's.
    """
    path = Path(str(spec))
    if path.is_dir():
        raise WeightscopeError(f"classifier {path} is a folder; {_FORMS}")
    if not path.is_file():
        raise WeightscopeError(f"classifier file not found: {path}; {_FORMS}")
    module, config, source = _from_file(path, trust)
    return classifier_from_module(path.name, module, config, source, class_names)


def classifier_from_module(name: str, module: torch.nn.Module, config: dict, source: str,
                           class_names: Sequence[str] | None = None) -> Classifier:
    """A :class:`Classifier` of a module already built: ``config`` holds its preprocessing (image_size, mean, std,
    class_names); source: where it came from. The head is found and checked as :func:`load_classifier` says."""
    return _finish(name, module.eval().cpu().float(), config, source, class_names)


def _from_file(path: Path, trust: bool):
    from .checkpoints import _sniff

    try:
        kind = _sniff(path)
    except OSError as err:
        raise WeightscopeError(f"cannot read classifier {path}: {err.strerror}") from None
    no_arch = (f"{path} holds only weights (a state dict), not the architecture, so its features cannot be "
               f"computed; save the whole module with torch.save(model, path) and load it with {TRUST_FLAG}")
    if kind == "safetensors":  # weightscope classifier files are read by weightscope.bundled.load_classifier
        raise StateDictOnly(no_arch)
    if kind == "torchscript":
        raise WeightscopeError(f"{path} is a TorchScript archive: a scripted module takes no Python forward hooks, "
                               "so the input of its last nn.Linear cannot be read; save the Python module with "
                               "torch.save(model, path) instead")
    if kind not in ("torch-zip", "torch-legacy"):
        what = "the file is empty" if kind == "empty" else "it is neither a safetensors nor a torch file"
        raise WeightscopeError(f"cannot read classifier {path}: {what}; {_FORMS}")
    obj = _torch_load(path, weights_only=True, trust=trust)
    if obj is not None:  # safe loading succeeded: tensors and plain containers only
        raise StateDictOnly(no_arch)
    obj = _torch_load(path, weights_only=False, trust=trust)
    if isinstance(obj, dict):
        modules = [v for v in obj.values() if isinstance(v, torch.nn.Module)]
        obj = modules[0] if len(modules) == 1 else obj
    if isinstance(obj, dict):  # a training checkpoint (weights plus other objects, no module)
        raise StateDictOnly(no_arch)
    if not isinstance(obj, torch.nn.Module):
        raise WeightscopeError(f"{path} holds a {type(obj).__name__}, not an nn.Module; save the whole classifier "
                               "with torch.save(model, path)")
    config, where = _sidecar_preprocessing(path)
    return obj, config, f"{path} (pickled module; preprocessing {where})"


def _torch_load(path: Path, *, weights_only: bool, trust: bool):
    """torch.load of ``path``; with weights_only, None where it holds objects safe loading refuses (and then a
    WeightscopeError naming --trust-checkpoint unless ``trust``). Every other failure: one line."""
    try:
        with open(path, "rb") as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return torch.load(fh, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError:
        if not weights_only:
            raise WeightscopeError(f"cannot unpickle classifier {path}: the file is corrupt") from None
        if not trust:
            raise WeightscopeError(f"{path} is a pickled Python object (a whole module): loading it runs code stored "
                                   f"in the file; pass {TRUST_FLAG} (trust=True) if you trust it") from None
        return None
    except ModuleNotFoundError as err:
        raise WeightscopeError(f"cannot unpickle classifier {path}: its class lives in module '{err.name}', which "
                               "cannot be imported here; add that module's folder to PYTHONPATH") from None
    except AttributeError as err:
        import re

        m = re.search(r"attribute '([^']+)' on <module '([^']+)'", str(err))
        cls, mod = (m.group(1), m.group(2)) if m else ("its class", "the saving script")
        main = sys.modules.get("__main__")
        # classes pickled from a script are looked up in whatever runs as __main__ now (e.g. weightscope.cli)
        main_names = {"__main__", getattr(main, "__name__", None), getattr(getattr(main, "__spec__", None), "name", None)}
        hint = ("it was defined in the script that saved it (__main__): move the class into a module, save the "
                "model again, and put that module on PYTHONPATH" if mod in main_names or not m
                else f"module '{mod}' has no '{cls}' here: use the code version that saved it")
        raise WeightscopeError(f"cannot unpickle classifier {path}: it refers to class '{cls}', but {hint}") from None
    except Exception as err:  # each reader raises its own type for cut or foreign files
        raise WeightscopeError(f"cannot read classifier {path}: the file is truncated or not a torch file "
                               f"({type(err).__name__}); {_FORMS}") from None


def _sidecar_preprocessing(path: Path) -> tuple[dict, str]:
    """(preprocessing dict, where it came from) for a pickled module: ``<path>.json`` or ``<stem>.json``
    (keys image_size, mean, std, class_names, each optional) over ImageNet's defaults."""
    config = {"image_size": IMAGENET_SIZE, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    for side in (path.with_name(path.name + ".json"), path.with_suffix(".json")):
        if side.is_file():
            try:
                given = json.loads(side.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                raise WeightscopeError(f"cannot read the classifier's preprocessing {side}: "
                                       f"{type(err).__name__}") from None
            if not isinstance(given, dict):
                raise WeightscopeError(f"{side} must be a JSON object with image_size, mean, std, class_names")
            config.update({k: given[k] for k in ("image_size", "mean", "std", "class_names") if k in given})
            return _check_preprocessing(config, str(side)), f"from {side}"
    return config, f"ImageNet defaults ({IMAGENET_SIZE} px, ImageNet mean/std)"


def _check_preprocessing(config: dict, where: str) -> dict:
    size = config["image_size"]
    if not isinstance(size, int) or size < 1:
        raise WeightscopeError(f"{where}: image_size must be a positive integer, got {size!r}")
    for key in ("mean", "std"):
        v = config[key]
        if not isinstance(v, list) or len(v) != 3 or not all(isinstance(x, (int, float)) for x in v):
            raise WeightscopeError(f"{where}: {key} must be a list of 3 numbers (R, G, B), got {v!r}")
    if any(s <= 0 for s in config["std"]):
        raise WeightscopeError(f"{where}: std must be positive, got {config['std']}")
    names = config.get("class_names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise WeightscopeError(f"{where}: class_names must be a list of strings")
    return config


def _finish(name: str, module: torch.nn.Module, config: dict, source: str, class_names) -> Classifier:
    """Find the head by running a 2-image probe batch and check, by construction, that the module's output is
    the output of an nn.Linear its forward calls (the last such call); WeightscopeError otherwise."""
    linears = {n: m for n, m in module.named_modules() if isinstance(m, torch.nn.Linear)}
    if not linears:
        raise WeightscopeError(f"{type(module).__name__} has no nn.Linear layer: SING needs a classifier whose "
                               "output is a linear layer's (logits = features W^T + b)")
    size = int(config["image_size"])
    x = preprocess_images(np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8), size,
                          config["mean"], config["std"])
    calls = []
    handles = [m.register_forward_hook(lambda mod, args, out, n=n: calls.append((n, args, out)))
               for n, m in linears.items()]
    try:
        with torch.no_grad():
            out = module(x)
    except Exception as err:
        raise WeightscopeError(f"the classifier fails on a {size}x{size} probe batch ({type(err).__name__}: "
                               f"{str(err).splitlines()[0][:160] if str(err) else ''}); give image_size in its "
                               "JSON sidecar if it expects another input size") from None
    finally:
        for h in handles:
            h.remove()
    if not calls:
        raise WeightscopeError(f"{type(module).__name__}'s forward calls none of its nn.Linear layers: SING needs "
                               "a classifier whose output is a linear layer's")
    # the head: the last-called nn.Linear whose output is the module's output (a side branch may call another
    # Linear after it, e.g. an auxiliary head)
    found = [c for c in reversed(calls) if isinstance(out, torch.Tensor) and out.shape == c[2].shape
             and torch.allclose(out, c[2], rtol=1e-5, atol=1e-6 * (1.0 + float(c[2].abs().max())))]
    if not found:
        raise WeightscopeError(f"the classifier's output is not the output of its last nn.Linear (module "
                               f"'{calls[-1][0]}'): something (a softmax, a nonlinearity, another layer) follows it; "
                               "SING needs logits = features W^T + b: save the module without what follows")
    head_name, args, _ = found[0]
    if args[0].ndim != 2:
        raise WeightscopeError(f"the last nn.Linear ({head_name}) sees inputs of shape {tuple(args[0].shape)}, "
                               "not (N, F) feature vectors; SING needs one feature vector per image")
    names = class_names if class_names is not None else config.get("class_names")
    head = linear_head(module, names, key=head_name)
    return Classifier(name, module, head, head.class_names, size, tuple(map(float, config["mean"])),
                      tuple(map(float, config["std"])), source, head_name)
