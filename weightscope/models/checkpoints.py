"""Checkpoint files in and out: read every layout open_clip reads (plus the usual training wrappers), fit a state
dict to a model, write a state dict stock open_clip loads, and the JSON sidecar that says where a file came from.

Reading (:func:`read_checkpoint`) sniffs the format from the bytes, not the suffix: safetensors, torch zip or
legacy pickle (``torch.load(weights_only=True)``: tensors and plain containers only, unless the caller trusts the
file), or a TorchScript archive (OpenAI's original CLIP files; read by ``torch.jit.load``, whose C++ reader builds
no Python objects). The weights are found inside nested containers (``state_dict`` / ``model`` / ``ema`` ...).
Fitting (:func:`fit_state_dict`) removes wrapper prefixes (``module.`` from DataParallel, ``_orig_mod.`` from
torch.compile, any single prefix every key shares such as Lightning's ``model.``), applies open_clip's own layout
conversions (:mod:`weightscope.models.adapters.openclip_checkpoint`), reshapes scalar vs (1,) parameters and drops
non-persistent buffers that older code saved.
"""
from __future__ import annotations

import hashlib
import json
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.errors import WeightscopeError

SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
TRUST_HINT = ("if you trust the file, pass trust_checkpoint=True (CLI: --trust-checkpoint); unpickling can run "
              "code stored in it")
#: where training code keeps the weights inside a checkpoint dict, most preferred first (EMA copies last)
CONTAINER_KEYS = ("state_dict", "model", "module", "net", "network", "model_state_dict", "model_state", "weights",
                  "params", "ema", "model_ema", "state_dict_ema", "ema_state_dict", "ema_model")


@dataclass
class RawCheckpoint:
    """What a checkpoint file holds: state_dict (name -> CPU tensor, as saved), path, container (where in the
    file the weights sat, e.g. "state_dict" or "model/ema"; "" at top level), quick_gelu (True/False when the
    file itself says which activation the model used, as TorchScript archives do; None otherwise)."""

    state_dict: dict[str, torch.Tensor]
    path: Path
    container: str = ""
    quick_gelu: bool | None = None


def _sniff(path: Path) -> str:
    """The file's format from its first bytes: safetensors, torchscript, torch-zip, torch-legacy, empty, unknown."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    if not head:
        return "empty"
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile:
            return "torch-zip"  # a cut zip: torch.load says truncated
        return "torchscript" if any(n.endswith("/constants.pkl") for n in names) else "torch-zip"
    # safetensors first: a header length of 128 + 256 k starts with the byte 0x80, like a pickle
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size:
        return "safetensors"
    if head[:1] == b"\x80":
        return "torch-legacy"
    return "unknown"


def read_checkpoint(path: str | Path, trust: bool = False) -> RawCheckpoint:
    """Read a checkpoint file into a flat state dict (see the module docstring); WeightscopeError on any problem.

    trust: unpickle with ``weights_only=False`` (arbitrary objects, e.g. an argparse.Namespace of training
    arguments, or a whole pickled model). Never the default: unpickling runs code the file names.
    """
    path = Path(path)
    if path.is_dir():
        raise WeightscopeError(f"checkpoint {path} is a folder, not a file; give the weights file inside it, or "
                               f"local-dir:{path} for a folder with an open_clip_config.json")
    if not path.is_file():
        raise WeightscopeError(f"checkpoint file not found: {path} (give the path of a .safetensors, .pt or .bin file)")
    try:
        kind = _sniff(path)
    except OSError as err:
        raise WeightscopeError(f"cannot read checkpoint {path}: {err.strerror}") from None
    if kind == "empty":
        raise WeightscopeError(f"checkpoint {path} is an empty file; expected a .safetensors or torch state-dict file")
    if kind == "unknown":
        raise WeightscopeError(f"cannot read checkpoint {path}: it is neither a safetensors nor a torch file "
                               "(expected a complete .safetensors or torch state-dict file)")
    quick_gelu = None
    try:
        if kind == "safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        elif kind == "torchscript":
            from .adapters.openclip_checkpoint import is_quick_gelu

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
                archive = torch.jit.load(str(path), map_location="cpu")
            quick_gelu = is_quick_gelu(archive)
            obj = dict(archive.state_dict())
        else:
            with open(path, "rb") as fh:  # a file object: torch.load would read a ".safetensors" name as safetensors
                obj = torch.load(fh, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as err:
        raise WeightscopeError(f"cannot read checkpoint {path}: {_refusal(err)}; {TRUST_HINT}") from None
    except (ModuleNotFoundError, AttributeError) as err:  # trusted unpickling of classes this Python lacks
        raise WeightscopeError(f"cannot unpickle checkpoint {path}: it needs {err} from the code that saved it; "
                               "save its state_dict() instead") from None
    except Exception as err:  # each reader raises its own type for cut or foreign files
        raise WeightscopeError(
            f"cannot read checkpoint {path}: the file is truncated or not a checkpoint ({type(err).__name__}); "
            "expected a complete .safetensors or torch state-dict file"
        ) from None
    sd, container = _find_state_dict(obj, path)
    return RawCheckpoint(sd, path, container, quick_gelu)


def _refusal(err: Exception) -> str:
    """One line for torch's weights_only refusal, naming the object it refused."""
    text = str(err)
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if m:
        return f"safe loading (weights_only) refused a non-tensor object of type {m.group(1)}"
    m = re.search(r"WeightsUnpickler error: ([^\n]+)", text)
    detail = m.group(1).strip().rstrip(".") if m else text.splitlines()[0][:200] if text else type(err).__name__
    return f"safe loading (weights_only) refused a non-tensor object ({detail})"


def _is_tensor_dict(obj) -> bool:
    return (isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) for k in obj)
            and all(isinstance(v, torch.Tensor) for v in obj.values()))


def _candidates(obj, where: str, depth: int = 0):
    """(place, state dict) for every dict of tensors inside ``obj`` (modules count by their state_dict)."""
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if _is_tensor_dict(obj):
        yield where, obj
    elif isinstance(obj, dict) and depth < 3:
        for key, value in obj.items():
            if isinstance(value, (dict, torch.nn.Module)):
                yield from _candidates(value, f"{where}/{key}" if where else str(key), depth + 1)


def _rank(place: str) -> tuple:
    parts = place.split("/")
    return tuple(CONTAINER_KEYS.index(p) if p in CONTAINER_KEYS else len(CONTAINER_KEYS) for p in parts)


def _find_state_dict(obj, path: Path) -> tuple[dict[str, torch.Tensor], str]:
    found = sorted(_candidates(obj, ""), key=lambda c: _rank(c[0]))
    # an optimizer's per-parameter state is a dict of tensors too, but never under a weights key
    weights = [c for c in found if all(p in CONTAINER_KEYS for p in c[0].split("/") if p)] or found
    if not weights:
        keys = ", ".join(map(str, list(obj)[:6])) if isinstance(obj, dict) else type(obj).__name__
        raise WeightscopeError(f"checkpoint {path} holds no state dict of tensors (found: {keys})")
    place, sd = weights[0]
    if len(weights) > 1:
        others = ", ".join(repr(p) for p, _ in weights[1:])
        warnings.warn(f"weightscope: {path} holds several weight sets; using {place!r} (not {others})", stacklevel=3)
    return dict(sd), place


# ------------------------------------------------------------------------------------------------ fitting

def _strip_compile(key: str) -> str:
    # torch.compile wraps modules in an OptimizedModule whose child is "_orig_mod": never a real parameter name
    return ".".join(part for part in key.split(".") if part != "_orig_mod")


def fit_state_dict(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``sd`` renamed and reshaped to ``model``'s layout where the file's layout is a known variant (see the
    module docstring). What still differs is left for :func:`load_strict` to report. ``sd`` is not modified."""
    from .adapters.openclip_checkpoint import convert_layout

    own = model.state_dict()
    sd = {_strip_compile(k): v for k, v in sd.items()}
    # a prefix every key shares (module., model., model.clip. ...): strip as many segments as match the model best
    best, cur = sd, sd
    while cur and all("." in k for k in cur) and len({k.split(".", 1)[0] for k in cur}) == 1:
        cur = {k.split(".", 1)[1]: v for k, v in cur.items()}
        if len(set(cur) & set(own)) > len(set(best) & set(own)):
            best = cur
    sd = best
    sd = convert_layout(model, sd)
    # buffers the model recomputes (attention masks, position ids) that older code saved
    transient = {name for name, _ in model.named_buffers()} - set(own)
    sd = {k: v for k, v in sd.items() if k not in transient}
    for k, v in sd.items():
        if k in own and v.shape != own[k].shape and v.numel() == own[k].numel() \
                and [n for n in v.shape if n != 1] == [n for n in own[k].shape if n != 1]:
            sd[k] = v.reshape(own[k].shape)  # e.g. logit_scale saved as (1,) by older CLIP code
    return sd


def load_strict(model: torch.nn.Module, sd: dict[str, torch.Tensor], what: str, arch: str, hint: str = "") -> None:
    """Load ``sd`` into ``model`` (strict), turning key or shape mismatches into one readable line."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            k = mismatched[0]
            parts.append(f"{len(mismatched)} shape mismatches (e.g. {k}: file {tuple(sd[k].shape)} vs model "
                         f"{tuple(own[k].shape)})")
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        raise WeightscopeError(f"{what} does not match architecture {arch!r}: {'; '.join(parts)} - "
                               f"{hint or 'pass the model name it was trained with'}")
    with torch.no_grad():
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=True)


# ------------------------------------------------------------------------------------------------ writing

def unwrap_module(module: torch.nn.Module) -> torch.nn.Module:
    """The model inside DataParallel / DistributedDataParallel / torch.compile wrappers (any nesting)."""
    while True:
        if isinstance(module, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
            module = module.module
        elif isinstance(getattr(module, "_orig_mod", None), torch.nn.Module):
            module = module._orig_mod
        else:
            return module


def clean_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s state dict as its unwrapped model would name it: no ``module.`` / ``_orig_mod.`` segments from
    wrappers at any depth (a compiled vision tower too); contiguous CPU copies (safetensors refuses shared
    storage)."""
    wrappers = []
    for name, m in module.named_modules():
        if isinstance(m, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
            wrappers.append((name, "module"))
        elif isinstance(getattr(m, "_orig_mod", None), torch.nn.Module):
            wrappers.append((name, "_orig_mod"))
    wrappers.sort(key=lambda w: -len(w[0]))  # innermost first: their paths still hold the outer segments
    out = {}
    for key, value in module.state_dict().items():
        for name, child in wrappers:
            prefix = f"{name}.{child}." if name else f"{child}."
            if key.startswith(prefix):
                key = (f"{name}." if name else "") + key[len(prefix):]
        out[key] = value.detach().to("cpu").contiguous().clone()
    return out


# ------------------------------------------------------------------------------------------------ sidecars

def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sidecar_path(path: str | Path) -> Path:
    """``<path>.json``: where the record of a checkpoint weightscope wrote goes."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def read_sidecar(path: str | Path) -> dict | None:
    """The sidecar of checkpoint ``path`` as a dict, or None when there is none."""
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightscopeError(f"cannot read the sidecar {side} of checkpoint {path} ({type(err).__name__}); "
                               "fix or remove it, or pass the model name explicitly") from None
    if not isinstance(data, dict):
        raise WeightscopeError(f"sidecar {side} is not a JSON object; fix or remove it")
    return data


def architecture(sidecar: dict | None) -> dict | None:
    """{"name": open_clip model name, "options": create_model overrides} recorded in a sidecar, or None.
    Sidecars written before the "architecture" entry existed name the model under source.model."""
    if not sidecar:
        return None
    arch = sidecar.get("architecture")
    if isinstance(arch, dict) and isinstance(arch.get("name"), str):
        config = arch.get("config") if isinstance(arch.get("config"), dict) else None
        return {"name": arch["name"], "options": dict(arch.get("options") or {}), "config": config}
    name = (sidecar.get("source") or {}).get("model") if isinstance(sidecar.get("source"), dict) else None
    return {"name": name, "options": {}, "config": None} if isinstance(name, str) else None


def record_provenance(module: torch.nn.Module, name: str, options: dict, source: dict, config: dict | None = None) -> None:
    """Note on ``module`` where its weights came from, for the sidecar of any copy saved later: architecture
    ``name`` with open_clip create_model ``options``, and ``source`` ({"model", "source"[, "checkpoint",
    "pretrained"]}). load_model and the shapes trainer call this; apply_edits extends it."""
    module._weightscope_name = name
    arch = {"name": name, "options": dict(options)}
    if config:
        arch["config"] = config
    module._weightscope_provenance = {"architecture": arch, "source": source}


def provenance(module: torch.nn.Module) -> dict:
    """What weightscope knows of where ``module``'s weights came from (recorded by load_model and apply_edits):
    {"architecture": {...} or None, "source": {...}, "edits": [...], "basis": {...}} (edits/basis when edited)."""
    prov = getattr(module, "_weightscope_provenance", None)
    name = getattr(module, "_weightscope_name", None)
    if isinstance(prov, dict):
        if prov.get("architecture") is None and name:  # a name given after the fact (``module._weightscope_name``)
            return {**prov, "architecture": {"name": name, "options": {}}}
        return prov
    return {"architecture": {"name": name, "options": {}} if name else None,
            "source": {"model": name or type(module).__name__, "source": "object"}}


def sidecar_record(module: torch.nn.Module, checkpoint_sha256: str, selection: dict | None = None,
                   extra: dict | None = None) -> dict:
    """The sidecar of a checkpoint written from ``module``: producer, architecture (name + open_clip options, so
    that the file loads by path alone), source (model, source, and the base checkpoint's path and sha256 when
    it was a file, with that file's own sidecar when it had one), basis, edits, selection, ``extra`` entries
    and the written file's sha256. The one writer of sidecars, whichever route saves."""
    from ..core.version import __version__

    prov = provenance(module)
    source = dict(prov.get("source") or {})
    base = source.get("checkpoint")
    if base and Path(base).is_file():
        source["checkpoint_sha256"] = sha256_file(base)
        earlier = read_sidecar(base)
        if earlier is not None and earlier.get("checkpoint_sha256") == source["checkpoint_sha256"]:
            source["sidecar"] = earlier
    record = {"producer": f"weightscope {__version__}", "architecture": recorded_architecture(module), "source": source,
              "basis": prov.get("basis"), "edits": list(prov.get("edits") or []), "selection": selection or {}}
    record.update(extra or {})
    record["checkpoint_sha256"] = checkpoint_sha256
    return record


def recorded_architecture(module: torch.nn.Module) -> dict | None:
    """The architecture a sidecar of ``module`` records so that the file loads by path alone: the recorded one
    when it carries a config or names a registered open_clip model; else, for an open_clip CLIP built from a
    config dict (which keeps nothing of it), the config recovered from the module's structure under a name
    unique to it (adapters.openclip_config); else what is recorded (None for an unknown object)."""
    arch = provenance(module).get("architecture")
    if arch and (arch.get("config") or str(arch.get("name", "")).startswith(("hf:", "hf-hub:", "local-dir:"))):
        return arch
    import open_clip

    if arch and arch.get("name") in open_clip.list_models():
        return arch
    from .adapters.openclip_config import config_name, infer_config

    config = infer_config(module)
    if config is None:
        return arch
    return {"name": config_name(config), "options": dict((arch or {}).get("options") or {}), "config": config}


def loads_by_path(arch: dict | None) -> bool:
    """Whether a sidecar's architecture entry is enough to build the model again (a config, or an open_clip name)."""
    if not arch or not isinstance(arch.get("name"), str):
        return False
    if arch.get("config"):
        return True
    import open_clip

    return arch["name"] in open_clip.list_models() or arch["name"].startswith(("hf-hub:", "local-dir:"))
