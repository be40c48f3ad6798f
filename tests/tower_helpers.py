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
