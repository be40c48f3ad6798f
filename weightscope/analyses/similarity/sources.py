"""Where activations and concepts come from: images with pixel-mask concepts (``ProbeData``; the bundled
defaults build the shapes world's), a folder of class subfolders (image-level concepts), and the hook points of an
open_clip vision tower."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...core.errors import WeightscopeError
from .concepts import Concepts, downsample_masks

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class ArrayInputs:
    """uint8 images (N, S, S, 3) turned into model input on slicing: normalised, resized to ``size`` (bilinear)."""

    def __init__(self, images: np.ndarray, size: tuple[int, int] | None = None):
        self.images, self.size = images, size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, sl: slice) -> torch.Tensor:
        from ..zeroshot import images_to_tensor

        x = images_to_tensor(self.images[sl])
        if self.size is not None and tuple(x.shape[2:]) != tuple(self.size):
            x = torch.nn.functional.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return x


class FolderInputs:
    """Image files loaded on slicing: ``transform(PIL RGB image)`` per file, stacked (streams from disk)."""

    def __init__(self, files: list[Path], transform):
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, sl: slice) -> torch.Tensor:
        from PIL import Image

        out = []
        for p in self.files[sl]:
            with Image.open(p) as im:
                out.append(self.transform(im.convert("RGB")))
        return torch.stack(out)


@dataclass(frozen=True)
class ProbeData:
    """Images with concept annotations for the data-based probes.

    images: uint8 array (N, S, S, 3), or image files read with each model's own preprocessing; concepts: their
    :class:`Concepts`; spatial: probe patch tokens against pixel masks (True) or the class token against
    image-level labels (False); name: how results record the source ("shapes", "cifar10" ...).
    """

    images: object
    concepts: Concepts
    spatial: bool
    name: str


def mask_concepts(names: list[str], n: int, full_masks, mask_size: int = 12, chunk: int = 250) -> Concepts:
    """Pixel-mask concepts of n images: ``full_masks(slice)`` gives the full-resolution bool masks (n', C, H, W) of
    a slice of the images; masks are area-averaged to mask_size x mask_size (a multiple of every feature-map size
    used with them keeps the averaging exact; 12 serves 3 x 3, 4 x 4, 6 x 6 and 12 x 12 maps)."""
    masks = np.empty((n, len(names), mask_size, mask_size), dtype=np.float32)
    labels = np.empty(masks.shape[:2], dtype=bool)
    for start in range(0, n, chunk):  # full-resolution masks of a chunk of images at a time
        full = full_masks(slice(start, start + chunk))
        labels[start:start + chunk] = full.any(axis=(2, 3))
        masks[start:start + chunk] = downsample_masks(full.astype(np.float32), (mask_size, mask_size))
    return Concepts(names, labels, masks)


def subset_scenes(scenes, sl: slice):
    """A slice of a dataclass of per-image arrays (every field but ``image_size``)."""
    from dataclasses import fields, replace

    return replace(scenes, **{f.name: getattr(scenes, f.name)[sl] for f in fields(scenes) if f.name != "image_size"})


def folder_probes(folder: str | Path, n_images: int | None = None, seed: int = 0) -> ProbeData:
    """:func:`folder_concepts` as probe data (image-level concepts, probes on the class token)."""
    files, concepts = folder_concepts(folder, n_images, seed)
    return ProbeData(files, concepts, spatial=False, name="cifar10")


def folder_concepts(folder: str | Path, n_images: int | None = None, seed: int = 0) -> tuple[list[Path], Concepts]:
    """Image files and image-level class concepts of a folder with one subfolder per class (e.g. CIFAR-10 test).

    n_images: a seeded random subset of that size (all images when None); files keep their sorted order.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise WeightscopeError(f"image folder not found: {folder} (give a folder with one subfolder per class)")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    files, label = [], []
    for c, name in enumerate(classes):
        found = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        files.extend(found)
        label.extend([c] * len(found))
    if len(classes) < 2:
        raise WeightscopeError(f"{folder} has {len(classes)} class subfolder(s); a concept needs images with and "
                               "without it, so give at least two classes")
    label = np.asarray(label)
    if n_images is not None:
        if not 2 <= n_images:
            raise WeightscopeError(f"n_images must be at least 2, got {n_images}")
        keep = np.sort(np.random.default_rng(seed).permutation(len(files))[:n_images])
        files, label = [files[i] for i in keep], label[keep]
    return files, Concepts(classes, label[:, None] == np.arange(len(classes))[None, :])


def clip_layers(loaded, layers=None, spatial: bool = True):
    """Hook points of an open_clip vision tower's residual blocks.

    layers: block indices (default all; negative count from the end). Returns (module names, reducer, forward,
    image size): the reducer turns block outputs (N, T, D) into patch-token maps (N, gh, gw, D) when spatial, else
    the class token (N, D); forward is ``encode_image``.
    """
    from ...models.adapters import block_modules
    from ...decompose.head_svd import check_index

    info = block_modules(loaded)
    names = info["names"]
    chosen = names if layers is None else [names[check_index(i, len(names), "layer")] for i in sorted(set(layers))]
    gh, gw = info["grid"]

    def reduce(name: str, out: torch.Tensor) -> np.ndarray:
        if not info["batch_first"]:
            out = out.transpose(0, 1)
        if out.shape[1] != 1 + gh * gw:
            raise WeightscopeError(f"{name} has {out.shape[1]} tokens; expected a class token and {gh} x {gw} patches")
        x = out[:, 1:].reshape(out.shape[0], gh, gw, -1) if spatial else out[:, 0]
        return x.detach().to("cpu", torch.float32).numpy()

    from ...models.adapters import encode_image

    model = getattr(loaded, "model", loaded)
    return chosen, reduce, lambda x: encode_image(model, x), info["image_size"]
