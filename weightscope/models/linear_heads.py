"""A linear classifier head, whatever it came from: shared by SING (null spaces) and Similarity Depth (templates).

A head maps a feature f (F,) to logits f W^T + b (C,). Three ways to build one:

- ``analyses.zeroshot.zero_shot_head``: a CLIP zero-shot head, rows = prompt-ensembled class text embeddings of the model's own
  text tower (unit rows); its features are normalised image embeddings, so it lives in the joint space.
- :func:`linear_head`: the last ``nn.Linear`` of any torch classifier (a module), or a weight / bias pair taken
  from a state dict by key.
- :func:`head_from_arrays`: plain arrays.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..core.errors import WeightscopeError

DEFAULT_TEMPLATES = ("a photo of a {}.", "a {}.", "an image of a {}.")


@dataclass(frozen=True)
class LinearHead:
    """A linear head: logits = features @ weight.T + bias.

    weight: (C, F) float64; bias: (C,) float64 (zeros when the head has none); class_names: C strings;
    feature_space: what the F-dimensional input is, e.g. "joint (normalised image embedding)" or
    "penultimate features of resnet20".
    """

    weight: np.ndarray
    bias: np.ndarray
    class_names: tuple[str, ...]
    feature_space: str

    @property
    def n_classes(self) -> int:
        return self.weight.shape[0]

    @property
    def n_features(self) -> int:
        return self.weight.shape[1]

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Logits (N, C) of features (N, F) (or (C,) for one feature (F,))."""
        f = np.asarray(features, dtype=np.float64)
        if f.shape[-1] != self.n_features:
            raise WeightscopeError(f"features have width {f.shape[-1]} but the head expects {self.n_features}")
        return f @ self.weight.T + self.bias


def placeholder_class_names(n: int) -> tuple[str, ...]:
    """The names a head gets when none are given: "class 0" ... "class n-1"."""
    return tuple(f"class {i}" for i in range(n))


def head_from_arrays(weight, bias=None, class_names: Sequence[str] | None = None,
                     feature_space: str = "features") -> LinearHead:
    """A :class:`LinearHead` from a weight (C, F), an optional bias (C,) and optional class names (C).

    Raises WeightscopeError for a weight that is not 2-D, has fewer than 2 classes, holds non-finite values,
    or a bias / names list of the wrong length, or duplicate class names.
    """
    W = np.asarray(weight, dtype=np.float64)
    if W.ndim != 2:
        raise WeightscopeError(f"a head's weight must be a 2-D (classes, features) array, got shape {W.shape}")
    C = W.shape[0]
    if C < 2:
        raise WeightscopeError(f"a head needs at least 2 classes, got {C}")
    if not np.isfinite(W).all():
        raise WeightscopeError("the head's weight holds NaN or infinite values; give finite weights")
    b = np.zeros(C) if bias is None else np.asarray(bias, dtype=np.float64).reshape(-1)
    if b.shape != (C,):
        raise WeightscopeError(f"bias has {b.size} entries but the weight has {C} classes")
    if not np.isfinite(b).all():
        raise WeightscopeError("the head's bias holds NaN or infinite values; give finite values")
    names = tuple(str(n) for n in class_names) if class_names is not None else placeholder_class_names(C)
    if len(names) != C:
        raise WeightscopeError(f"{len(names)} class names for a head with {C} classes")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise WeightscopeError(f"duplicate class names: {', '.join(dup)}; give each class once")
    return LinearHead(W, b, names, feature_space)


def linear_head(module, class_names: Sequence[str] | None = None, key: str | None = None) -> LinearHead:
    """The head of a torch classifier: its last ``nn.Linear`` (in module order), or the one named by ``key``.

    module: an ``nn.Module``, or a state dict (then ``key`` names the weight, e.g. "fc.weight", default the last
    floating-point 2-D tensor in the dict's order; the bias is ``key`` with "weight" replaced by "bias" when
    present). Raises WeightscopeError when there is no linear head.
    """
    import torch

    if isinstance(module, dict):
        if key is None:
            # a classifier's head is its last matrix: convolutions are 4-D, norms and biases 1-D
            matrices = [k for k, v in module.items() if getattr(v, "ndim", 0) == 2 and v.is_floating_point()]
            if not matrices:
                raise WeightscopeError(f"the state dict ({len(module)} tensors) holds no 2-D weight: a classifier "
                                       "needs a linear head (an nn.Linear's weight) to be analysed")
            key = matrices[-1]
        if key not in module:
            raise WeightscopeError(f"no tensor {key!r} in the state dict; it has {len(module)} keys")
        bias_key = key[: -len("weight")] + "bias" if key.endswith("weight") else None
        bias = module.get(bias_key) if bias_key else None
        W = module[key].detach().double().cpu().numpy()
        b = None if bias is None else bias.detach().double().cpu().numpy()
        return head_from_arrays(W, b, class_names, feature_space=f"input of {key}")
    if not isinstance(module, torch.nn.Module):
        raise WeightscopeError(f"expected a torch module or a state dict, got {type(module).__name__}")
    named = dict(module.named_modules())
    if key is not None:
        lin = named.get(key)
        if not isinstance(lin, torch.nn.Linear):
            raise WeightscopeError(f"{key!r} is not an nn.Linear in this model")
        name = key
    else:
        linears = [(n, m) for n, m in named.items() if isinstance(m, torch.nn.Linear)]
        if not linears:
            raise WeightscopeError(f"{type(module).__name__} has no nn.Linear layer: a classifier needs a linear head")
        name, lin = linears[-1]
    W = lin.weight.detach().double().cpu().numpy()
    b = None if lin.bias is None else lin.bias.detach().double().cpu().numpy()
    return head_from_arrays(W, b, class_names, feature_space=f"input of {name}")
