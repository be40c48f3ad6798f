"""The shapes-world CLIP shipped inside the package: config name, registration and checkpoint paths.

Usage with stock open_clip (no network, no training)::

    from weightscope.shapes import bundled
    bundled.register()
    model = open_clip.create_model(bundled.MODEL_NAME, pretrained=str(bundled.checkpoint_path()))
    tokenizer = open_clip.get_tokenizer(bundled.MODEL_NAME)

The weights are fp16 safetensors; open_clip copies them into its fp32 parameters.
"""
from __future__ import annotations

from pathlib import Path

from weightscope.core.errors import WeightscopeError

MODEL_NAME = "shapes-vit"
ASSETS = Path(__file__).resolve().parent / "assets"
CONFIG_PATH = ASSETS / f"{MODEL_NAME}.json"
CHECKPOINTS = {
    "base": ASSETS / f"{MODEL_NAME}-base.safetensors",
    "tuned": ASSETS / f"{MODEL_NAME}-tuned.safetensors",
}
MODEL_CARD = ASSETS / "MODEL_CARD.md"


def register() -> str:
    """Add the shapes-vit config to open_clip's registry (idempotent); returns MODEL_NAME."""
    import open_clip

    if MODEL_NAME not in open_clip.list_models():
        # register the single file, not the folder: nothing else in assets/ should become a model name
        open_clip.add_model_config(CONFIG_PATH)
    return MODEL_NAME


def checkpoint_path(which: str = "base") -> Path:
    """Path of the shipped checkpoint: "base" (pre-trained) or "tuned" (fine-tuned on the shifted world)."""
    if which not in CHECKPOINTS:
        raise WeightscopeError(f"unknown shapes checkpoint {which!r}; choose one of {sorted(CHECKPOINTS)}")
    path = CHECKPOINTS[which]
    if not path.is_file():
        raise WeightscopeError(f"bundled checkpoint {path} is missing; reinstall weightscope or run "
                               f"`python -m weightscope.shapes.train` to recreate it")
    return path


def load(which: str = "base", device: str = "cpu"):
    """(model in eval mode, tokenizer) of a bundled checkpoint, through stock open_clip."""
    import open_clip

    register()
    model = open_clip.create_model(MODEL_NAME, pretrained=str(checkpoint_path(which)), device=device)
    model.eval()
    return model, open_clip.get_tokenizer(MODEL_NAME)
