"""Shared fixtures: random-init open_clip models (never the network) and a tiny registered config.

Random init leaves every LayerNorm gain at 1, every shift and attention bias at 0 and LayerScale uniform, so a
check of exactness on such a model cannot see a fault that drops or inverts one of them. ``asymmetrize`` breaks
that symmetry; ``asym_model`` (and ``asym_ls_model``, with non-uniform LayerScale) are the models to use wherever
a test claims exactness.
"""
from __future__ import annotations

import json
import warnings

import pytest
import torch

TINY = "ws-test-tiny"
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def make_model(name: str, seed: int = 0, **kwargs):
    """open_clip.create_model(name, pretrained=None) with a fixed seed, in eval mode."""
    import open_clip

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_clip.create_model(name, pretrained=None, **kwargs).eval()


def register_config(tmp_dir, name: str, cfg: dict) -> str:
    import open_clip

    path = tmp_dir / f"{name}.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)
    return name


def asymmetrize(model, seed: int = 0, gain=(0.5, 1.5), shift: float = 0.3, bias: float = 0.3,
                layer_scale=(0.5, 1.5)):
    """Give ``model`` (in place; returns it) random LayerNorm gains (uniform in ``gain``) and shifts (normal, std
    ``shift``), random biases on every linear map and attention projection (normal, std ``bias``), and random
    per-channel LayerScale (uniform in ``layer_scale``) where the model has LayerScale. Vision and text towers."""
    from open_clip.transformer import LayerScale

    g = torch.Generator().manual_seed(seed)

    def uniform(t, lo_hi):
        lo, hi = lo_hi
        t.copy_(lo + (hi - lo) * torch.rand(t.shape, generator=g, dtype=torch.float64).to(t.dtype))

    def normal(t, std):
        t.copy_(std * torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.dtype))

    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.LayerNorm) and mod.weight is not None:
                uniform(mod.weight, gain)
                if mod.bias is not None:
                    normal(mod.bias, shift)
            elif isinstance(mod, torch.nn.MultiheadAttention) and mod.in_proj_bias is not None:
                normal(mod.in_proj_bias, bias)
            elif isinstance(mod, torch.nn.Linear) and mod.bias is not None:
                normal(mod.bias, bias)
            elif isinstance(mod, LayerScale):
                uniform(mod.gamma, layer_scale)
    return model


def pytest_configure(config):
    """Caches that libraries put in HOME or the temp folder (matplotlib's fonts and config, torch inductor's) go to
    one temporary folder removed at the end (tests/test_isolation.py checks that nothing is left behind)."""
    import os
    import tempfile

    config._weightscope_tmp = tempfile.mkdtemp(prefix="weightscope-tests-")
    for var, sub in (("MPLCONFIGDIR", "matplotlib"), ("TORCHINDUCTOR_CACHE_DIR", "torchinductor")):
        if var not in os.environ:
            os.environ[var] = os.path.join(config._weightscope_tmp, sub)


def pytest_unconfigure(config):
    import os
    import shutil

    folder = getattr(config, "_weightscope_tmp", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is not None and config.option.basetemp is None:
        try:  # pytest's per-user root, once the retention policy has emptied it (never another run's folders)
            root = factory.getbasetemp().parent
            if root.name.startswith("pytest-of-"):
                root.rmdir()
        except OSError:
            pass


@pytest.fixture(scope="session", autouse=True)
def _isolated_caches(tmp_path_factory):
    """No test writes outside pytest's temporary folders: the embedding cache goes to a session folder (a test that
    wants its own sets WEIGHTSCOPE_CACHE_DIR again), and Dask's scratch space (dask-scratch-space, otherwise left
    in the system temp folder) too. tests/test_isolation.py checks that nothing is left behind."""
    import os

    saved = os.environ.get("WEIGHTSCOPE_CACHE_DIR")
    os.environ["WEIGHTSCOPE_CACHE_DIR"] = str(tmp_path_factory.mktemp("embedding-cache"))
    scratch = str(tmp_path_factory.mktemp("dask-scratch"))
    try:
        import dask

        dask_config = dask.config.set({"temporary-directory": scratch})
    except ImportError:
        dask_config = None
    yield
    if dask_config is not None:
        dask_config.__exit__(None, None, None)
    if saved is None:
        os.environ.pop("WEIGHTSCOPE_CACHE_DIR", None)
    else:
        os.environ["WEIGHTSCOPE_CACHE_DIR"] = saved


@pytest.fixture(scope="session")
def tiny_name(tmp_path_factory):
    """Name of a tiny ViT CLIP config registered with open_clip (2 layers, 4 heads, width 64)."""
    return register_config(tmp_path_factory.mktemp("cfg"), TINY, TINY_CFG)


@pytest.fixture(scope="session")
def tiny_model(tiny_name):
    return make_model(tiny_name)


@pytest.fixture(scope="session")
def asym_model(tiny_name):
    """The tiny model with random LayerNorm gains (0.5-1.5) and shifts, and non-zero biases everywhere."""
    return asymmetrize(make_model(tiny_name, seed=0), seed=1)


@pytest.fixture(scope="session")
def asym_ls_name(tmp_path_factory):
    """The tiny config with LayerScale in the vision tower."""
    cfg = {**TINY_CFG, "vision_cfg": {**TINY_CFG["vision_cfg"], "ls_init_value": 0.5}}
    return register_config(tmp_path_factory.mktemp("cfg-ls"), TINY + "-ls", cfg)


@pytest.fixture(scope="session")
def asym_ls_model(asym_ls_name):
    """``asym_model``'s variant with non-uniform LayerScale (per-channel gains 0.5-1.5) after attention and MLP."""
    return asymmetrize(make_model(asym_ls_name, seed=2), seed=3)


@pytest.fixture(scope="session")
def vit_b16():
    return make_model("ViT-B-16")


@pytest.fixture(scope="session")
def vit_b16_weights(vit_b16):
    from weightscope import describe_model

    return describe_model(vit_b16)


@pytest.fixture(scope="session")
def vit_l14_weights():
    """The neutral description of a random-init ViT-L-14 (the model itself is dropped to save memory)."""
    from weightscope import describe_model

    return describe_model(make_model("ViT-L-14"))


def random_images(model, n: int, seed: int = 0) -> torch.Tensor:
    """n seeded standard-normal images (n, 3, S, S) at the model's input size."""
    size = model.visual.image_size[0]
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def embed_images(model, x: torch.Tensor):
    """The model's own image embeddings (N, E) as float64 numpy, no gradients."""
    with torch.no_grad():
        return model.encode_image(x).double().numpy()


def max_rel_error(a, b) -> float:
    """max |a - b| / max |b|: the relative error the exactness tests bound."""
    import numpy as np

    return float(np.abs(a - b).max() / np.abs(b).max())
