"""Shared fixtures: random-init open_clip models (never the network) and a tiny registered config."""
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


@pytest.fixture(scope="session")
def tiny_name(tmp_path_factory):
    """Name of a tiny ViT CLIP config registered with open_clip (2 layers, 4 heads, width 64)."""
    return register_config(tmp_path_factory.mktemp("cfg"), TINY, TINY_CFG)


@pytest.fixture(scope="session")
def tiny_model(tiny_name):
    return make_model(tiny_name)


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
