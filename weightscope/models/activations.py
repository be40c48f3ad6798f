"""Activations of named modules of any torch model, through forward hooks, batch by batch.

    feats = collect_activations(net, images, ["layer1.0", "layer2.0"], reduce=pool_spatial)
    feats["layer1.0"].shape          # (N, C): one reduced array per layer

Every hooked output is reduced (e.g. global average pooling) inside its hook, as soon as the module has run, so
the full activations are never kept: a run holds the reduced outputs of one batch, and ``collect_activations``
the reduced outputs of all images (never all layers of all images in full). Inputs are sliced lazily (``inputs[start:stop]``), so an object that loads images on
slicing streams them from disk.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.errors import WeightscopeError

Reducer = Callable[[str, torch.Tensor], np.ndarray]


def check_layers(model: torch.nn.Module, layers: Sequence[str]) -> list[str]:
    """Validate module names against ``model.named_modules()``; returns them as a list (order kept, no duplicates).

    Raises WeightscopeError naming the first unknown name and a few valid ones.
    """
    if isinstance(layers, str) or not layers:
        raise WeightscopeError(f"give a non-empty list of module names, got {layers!r}")
    known = dict(model.named_modules())
    for name in layers:
        if name not in known:
            valid = [n for n in known if n][:8]
            raise WeightscopeError(f"unknown layer name {name!r}: {type(model).__name__} has modules such as "
                                   f"{', '.join(valid)} (see model.named_modules())")
    if len(set(layers)) != len(layers):
        raise WeightscopeError(f"layer names repeat in {list(layers)}; give each module once")
    return list(layers)


def pool_spatial(name: str, out: torch.Tensor) -> np.ndarray:
    """Default reducer: (N, C, H, W) conv maps -> (N, C) global average; (N, C) kept; (N, T, D) tokens -> mean token."""
    if out.ndim == 4:
        out = out.mean(dim=(2, 3))
    elif out.ndim == 3:
        out = out.mean(dim=1)
    elif out.ndim != 2:
        raise WeightscopeError(f"layer {name} outputs shape {tuple(out.shape)}; pool_spatial reads 2-, 3- or 4-d outputs")
    return out.detach().to("cpu", torch.float32).numpy()


def _as_tensor(batch) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    return torch.from_numpy(np.ascontiguousarray(batch))


def iter_activations(
    model: torch.nn.Module,
    inputs,
    layers: Sequence[str],
    *,
    reduce: Reducer = pool_spatial,
    forward: Callable | None = None,
    batch_size: int = 256,
    progress: bool = True,
    desc: str = "activations",
) -> Iterator[tuple[slice, dict[str, np.ndarray]]]:
    """Yield (slice of the inputs, {layer: reduce(layer, output)}) for each batch of ``inputs``.

    inputs: anything with ``len`` and slicing that gives a tensor or array (N, ...): a tensor, an array, or a lazy
    loader. forward: how to run the model on a batch (default ``model(x)``; pass ``model.encode_image`` for a CLIP).
    The model runs under ``torch.no_grad`` in eval mode; its training flags are restored afterwards (so batch-norm
    statistics are never updated). A module that runs more than once per forward is refused (ambiguous output).
    """
    names = check_layers(model, layers)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise WeightscopeError(f"batch_size must be a positive integer, got {batch_size!r}")
    n = len(inputs)
    modules = dict(model.named_modules())
    forward = forward or model
    captured: dict[str, np.ndarray] = {}

    def hook_for(name):
        def hook(_module, _args, output):
            if name in captured:
                raise WeightscopeError(f"module {name} ran twice in one forward pass; hook a module that runs once")
            # reduce at once: the full output is freed as the forward moves on
            captured[name] = reduce(name, output[0] if isinstance(output, (tuple, list)) else output)
        return hook

    flags = {m: m.training for m in model.modules()}
    handles = [modules[name].register_forward_hook(hook_for(name)) for name in names]
    try:
        model.eval()
        with torch.no_grad():
            for start in tqdm(range(0, n, batch_size), desc=desc, unit="batch", disable=not progress):
                captured.clear()
                sl = slice(start, min(start + batch_size, n))
                forward(_as_tensor(inputs[sl]))
                missing = [name for name in names if name not in captured]
                if missing:
                    raise WeightscopeError(f"module {missing[0]} did not run in the forward pass; hook modules on its path")
                yield sl, {name: captured[name] for name in names}
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags.items():
            m.train(flag)
        captured.clear()


def collect_activations(model: torch.nn.Module, inputs, layers: Sequence[str], **options) -> dict[str, np.ndarray]:
    """{layer: reduced activations (N, ...)} for all inputs, concatenated batch by batch (see iter_activations)."""
    out: dict[str, np.ndarray] = {}
    n = len(inputs)
    for sl, acts in iter_activations(model, inputs, layers, **options):
        for name, a in acts.items():
            if name not in out:
                out[name] = np.empty((n,) + a.shape[1:], dtype=a.dtype)
            out[name][sl] = a
    return out
