"""Human labels for layers: a module path or a layer index -> "block 4", "block 4 (attention)", "stage 2, block 1".

The module paths of each family (open_clip ``transformer.resblocks.N``, timm ``blocks.N``, transformers
``encoder.layers.N``, torchvision / timm ResNets ``layerK.M``) are parameter-name facts, so they live here with
the adapters; reports call :func:`layer_label` and never parse a path themselves.
"""
from __future__ import annotations

import re

# (pattern over the end of a module path, label template); the first that matches wins
_BLOCKS = (
    (re.compile(r"(?:^|\.)resblocks\.(\d+)(?:\.(\w+))?(?:\..*)?$"), "block {0}"),  # open_clip ViT
    (re.compile(r"(?:^|\.)encoder\.layers?\.(\d+)(?:\.(\w+))?(?:\..*)?$"), "block {0}"),  # transformers CLIP
    (re.compile(r"(?:^|\.)blocks\.(\d+)(?:\.(\w+))?(?:\..*)?$"), "block {0}"),  # timm ViT
)
_STAGE = re.compile(r"(?:^|\.)layer(\d+)\.(\d+)(?:\.(\w+))?(?:\..*)?$")  # torchvision / timm ResNet
_PARTS = {"attn": "attention", "self_attn": "attention", "attention": "attention", "mlp": "MLP",
          "ln_1": "norm 1", "ln_2": "norm 2", "layer_norm1": "norm 1", "layer_norm2": "norm 2", "norm1": "norm 1",
          "norm2": "norm 2"}


def layer_label(layer: int | str) -> str:
    """A reader's name for a layer. ``layer``: a block index (int, or a string of digits) -> "layer N"; a module
    path as in ``model.named_modules()`` -> "block N" / "block N (attention)" / "stage K, block M"; any other
    path keeps its last two dotted parts."""
    if isinstance(layer, int) or (isinstance(layer, str) and layer.isdigit()):
        return f"layer {int(layer)}"
    name = str(layer)
    for pattern, template in _BLOCKS:
        m = pattern.search(name)
        if m:
            part = _PARTS.get(m.group(2) or "", m.group(2))
            return template.format(m.group(1)) + (f" ({part})" if part else "")
    m = _STAGE.search(name)
    if m:
        part = _PARTS.get(m.group(3) or "", m.group(3))
        return f"stage {m.group(1)}, block {m.group(2)}" + (f" ({part})" if part else "")
    return ".".join(name.split(".")[-2:])


def head_label(layer: int, head: int) -> str:
    """"layer 4, head 3"; the short form used in dense tables is ``L4 H3``."""
    return f"{layer_label(layer)}, head {head}"
