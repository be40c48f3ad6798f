"""Zero-shot tasks of the shapes world and the conversion of its uint8 images into model input.

Prompts follow the captions' phrasings (see ``world.caption_scene``) and are averaged per class (prompt
ensemble) by ``weightscope.analyses.zeroshot.build_classifier``. Every task is evaluated on one-object images.
"""
from __future__ import annotations

import numpy as np

from weightscope.core.errors import WeightscopeError
from weightscope.shapes import world

from weightscope.analyses.zeroshot import MEAN, STD, images_to_tensor  # noqa: F401  (re-exported for the trainers)


# task -> (class names (each a name or a list of synonyms averaged together), prompt templates)
TASKS = {
    "shape": (list(world.SHAPES),
              ["a {}", "a photo of a {}", "an image of a {}", "a picture of a {}"]),
    "colour": (list(world.COLOUR_NAMES),
               ["a {} object", "a {} shape", "a {} thing", "a photo of a {} object", "a shape that is {}"]),
    "size": (list(world.SIZES),
             ["a {} object", "a {} shape", "a {} thing", "a photo of a {} object"]),
    "position": (list(world.POSITIONS),
                 ["an object in the {}", "a shape in the {}", "a thing in the {}", "a photo of an object in the {}"]),
    "background": (list(world.BACKGROUND_NAMES),
                   ["an object on a {} background", "a shape on a {} background", "a {} background with a shape",
                    "a photo of an object on a {} background"]),
    # shape family: each class is the ensemble over its member shapes' prompts
    "family": ([list(world.ROUND_SHAPES), list(world.ANGULAR_SHAPES)],
               ["a {}", "a photo of a {}", "an image of a {}", "a picture of a {}"]),
}


def task_labels(task: str, scenes: world.Scenes) -> np.ndarray:
    """(N,) true class indices of the first object (or of the background) for a task of ``TASKS``."""
    if task in world.ATTRIBUTES:  # per-object attributes: the Scenes field of the same name
        return getattr(scenes, task)[:, 0]
    if task == "background":
        return scenes.background
    if task == "family":
        return scenes.family
    raise WeightscopeError(f"unknown shapes task {task!r}; choose one of {sorted(TASKS)}")


def attribute_accuracies(model, tokenizer, n: int = 2000, seed: int = 20_000, tasks=None,
                         spurious_strength: float | None = 0.9, batch_size: int = 500) -> dict:
    """Zero-shot accuracy per task on n held-out one-object images: {task: accuracy}.

    The images follow the pre-training distribution (background correlated with shape family) unless
    spurious_strength=None. The default seed is far from the training stream's seeds.
    """
    from weightscope.analyses import zeroshot

    images, scenes = world.single_objects(n, seed, spurious_strength=spurious_strength)
    x = images_to_tensor(images)
    out = {}
    for task in tasks or TASKS:
        names, templates = TASKS[task]
        clf = zeroshot.build_classifier(model, tokenizer, names, templates)
        res = zeroshot.zero_shot_accuracy(model, x, task_labels(task, scenes), clf, batch_size=batch_size)
        out[task] = res["accuracy"]
    return out


def spurious_accuracies(model, tokenizer, n_per_group: int = 500, seed: int = 30_000,
                        batch_size: int = 500) -> dict:
    """Zero-shot shape-family accuracy (round vs angular) on the balanced group split.

    Returns the ``zero_shot_accuracy`` dict with group names ("round on blue", ...) as group keys:
    accuracy (average over all images = mean of the 4 equal groups), groups, worst_group, worst_accuracy.
    """
    from weightscope.analyses import zeroshot

    images, labels, groups, _ = world.group_split(n_per_group, seed)
    names, templates = TASKS["family"]
    clf = zeroshot.build_classifier(model, tokenizer, names, templates)
    gnames = np.array(world.GROUP_NAMES)[groups]
    return zeroshot.zero_shot_accuracy(model, images_to_tensor(images), labels, clf, groups=gnames,
                                       batch_size=batch_size)
