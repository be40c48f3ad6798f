"""Random-init models built part by part, so that an analysis holds only the blocks it reads.

``load_model(NAME)`` with no weights gives open_clip's architecture with random weights, drawn with a fixed seed
and part by part: every tensor outside the vision tower's residual blocks (stem, ``ln_post``, ``proj``, the text
tower, the logit scale) comes from open_clip's own constructor run with ``vision_cfg.layers = 0`` under
``SEED``; vision block i is initialised by its modules' own ``reset_parameters`` (what open_clip's constructor
does for a block) under a seed derived from i. So a name gives the same weights in every run, and a block's weights
do not depend on which other blocks exist: ``inspect --layers 11`` reads layer 11 of the whole-model run.
Towers that cannot be built block by block (timm trunks, LayerScale, head scales) are built whole under ``SEED``.

With ``lazy=True`` (``load_model(NAME, lazy=True)``) the blocks stay on PyTorch's meta device (no memory) until
:func:`ensure_blocks` builds them and :func:`release_blocks` frees them again. Such a model is meant to be handed
to one analysis (``inspect_model`` does this), which reads what it needs and releases the rest.
"""
from __future__ import annotations

import contextlib
import zlib
from dataclasses import dataclass

import torch

from .adapters.openclip_vit import rebuildable_blocks, residual_blocks

SEED = 0


@dataclass(frozen=True)
class RandomInit:
    """How every part of a random-init model is drawn: the architecture, open_clip options and seed."""

    name: str
    options: tuple = ()
    seed: int = SEED

    def block_seed(self, index: int) -> int:
        return zlib.crc32(f"{self.seed}:visual block {index}".encode())

    def description(self) -> str:
        """What the weights are a function of (for cache keys): the recipe and the libraries that draw them."""
        import open_clip

        return (f"random-init {self.name} options {dict(self.options)} seed {self.seed} "
                f"open_clip {open_clip.__version__} torch {torch.__version__}")


def build_random_init(name: str, options: dict, open_clip, lazy: bool, quiet=contextlib.nullcontext):
    """(model, preprocess) of architecture ``name`` with seeded random weights (see the module docstring); ``lazy``:
    the vision blocks are left on the meta device. A model built part by part records its :class:`RandomInit`
    (:func:`recipe_of`); a tower built whole has none. quiet: a context manager factory that silences open_clip's "randomly initialised" log around the skeleton."""
    recipe = RandomInit(name, tuple(sorted(options.items())))
    with torch.device("meta"), quiet():
        skeleton, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None, device="meta",
                                                                       **options)
    blocks = rebuildable_blocks(getattr(skeleton, "visual", None))
    if blocks is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe.seed)
            net = open_clip.create_model(name, pretrained=None, **options)
        return net, preprocess
    vision_cfg = {**open_clip.get_model_config(name)["vision_cfg"], "layers": 0}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        donor = open_clip.create_model(name, pretrained=None, vision_cfg=vision_cfg, **options)
    _adopt(skeleton, donor)
    skeleton.train(donor.training)
    del donor
    skeleton._weightscope_random_init = recipe
    if not lazy:
        ensure_blocks(skeleton, range(len(blocks)))
    return skeleton, preprocess


def _adopt(skeleton, donor) -> None:
    """Put the donor's tensors into the skeleton's modules of the same names (a meta tensor cannot take CPU data)."""
    modules = dict(skeleton.named_modules())
    for qualified, source in donor.named_modules():
        target = modules.get(qualified)
        if target is None:
            continue
        for name, tensor in source._parameters.items():
            if name in target._parameters and tensor is not None:
                target._parameters[name] = tensor
        for name, tensor in source._buffers.items():
            if name in target._buffers and tensor is not None:
                target._buffers[name] = tensor


def _named_tensors(module):
    return list(module.named_parameters()) + list(module.named_buffers())


def _module(model):
    return getattr(model, "model", model)


def recipe_of(model) -> RandomInit | None:
    """The RandomInit a model (or LoadedModel) was built from, or None."""
    return getattr(_module(model), "_weightscope_random_init", None)


def ensure_blocks(model, layers) -> None:
    """Build the vision blocks in ``layers`` that are not built yet (a no-op for any other model)."""
    recipe = recipe_of(model)
    if recipe is None:
        return
    blocks = residual_blocks(_module(model).visual)
    for index in layers:
        block = blocks[index]
        if not any(p.is_meta for p in block.parameters()):
            continue
        block.to_empty(device="cpu")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe.block_seed(index))
            # children first: a module's reset (MultiheadAttention zeroes out_proj's bias) comes after its parts'
            for module in reversed(list(block.modules())):
                reset = getattr(module, "reset_parameters", None) or getattr(module, "_reset_parameters", None)
                if module is not block and reset is not None:
                    reset()


def release_blocks(model, layers) -> None:
    """Return the vision blocks in ``layers`` to the meta device (rebuilt, equal, by ensure_blocks when needed again);
    a no-op for a model that is not a random-init one built part by part."""
    if recipe_of(model) is None:
        return
    blocks = residual_blocks(_module(model).visual)
    for index in layers:
        blocks[index].to("meta")


def unbuilt(model) -> bool:
    """Whether any tensor of the model is still on the meta device (a lazy model not fully built)."""
    return any(t.is_meta for _, t in _named_tensors(_module(model)))
