"""The shapes world: a procedural image-caption world and the small CLIP trained on it (shipped in assets/).

- ``world``: deterministic generator of images, captions and the spurious-correlation group split.
- ``bundled``: ``MODEL_NAME``, ``register()``, ``checkpoint_path()`` for the shipped weights.
- ``evaluate``: zero-shot tasks of the world (prompts in the captions' phrasings) and image conversion.
- ``train``: the training script (``python -m weightscope.shapes.train``).
- ``classifiers``: the shipped 8-way shape classifiers (a small CNN and a small ViT) and their file format;
  ``train_classifiers`` trains them (``python -m weightscope.shapes.train_classifiers``).
"""
from weightscope.shapes.bundled import MODEL_NAME, checkpoint_path, register

__all__ = ["MODEL_NAME", "checkpoint_path", "register"]
