"""Helpers the vision-tower tests share (timm ViT, SigLIP, EVA): seeded images, open_clip's own image features, and
the relative error the forward and edit checks compare with."""
import numpy as np
import torch


def images(n: int = 3, seed: int = 0, size: int = 32) -> torch.Tensor:
    """n seeded normal images (n, 3, size, size)."""
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def embed(model, x) -> np.ndarray:
    """open_clip's own image features of x, float64 numpy."""
    with torch.no_grad():
        return model.encode_image(x).double().numpy()


def rel(a, b) -> float:
    """max |a - b| over max |b|."""
    return float(np.abs(a - b).max() / np.abs(b).max())


def register_tiny_timm(name: str, model_class, **defaults) -> None:
    """Register ``name`` as a timm model building ``model_class(**defaults)`` (keyword overrides win), once; timm's
    pretrained-config keywords are dropped, since a tiny test model has no weights to fetch."""
    from timm.models import is_model, register_model

    if is_model(name):
        return

    def build(pretrained=False, **kwargs):
        for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
            kwargs.pop(key, None)
        return model_class(**{**defaults, **kwargs})

    build.__name__ = build.__qualname__ = name          # timm registers a model under its function's name
    build.__module__ = model_class.__module__
    register_model(build)
