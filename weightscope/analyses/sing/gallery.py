"""Image galleries for "equivalent images by retrieval": the nearest gallery images to f and to a steered f~.

SING decodes f~ into an image with an unCLIP decoder; without one, the gallery images closest (cosine) to f~ show
what the equivalent feature looks like. For the bundled model the gallery is the shapes world itself (a seeded
sample of one-object scenes over the whole attribute grid, uniform backgrounds); for any model, a folder of images.

Gallery embeddings are cached like concept embeddings (same file format, ``weightscope.concepts.embed``'s reader and atomic
writer): under ``<cache dir>/embeddings/``, keyed by a hash of every model tensor, the preprocessing and the gallery
itself (seed, size and a checksum of the rendered pixels; or each file's path, size and modification time). A
corrupt file is reported and rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...concepts import embed
from ...models.adapters import openclip_text
from ...core.errors import WeightscopeError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
_FORMAT = 1


@dataclass(frozen=True)
class Gallery:
    """embeddings: (G, E) float32 unit rows; captions: G strings (scene captions or file names);
    images: (G, S, S, 3) uint8 thumbnails (shapes world) or None; paths: G files (folder) or None."""

    embeddings: np.ndarray
    captions: tuple[str, ...]
    images: np.ndarray | None = None
    paths: tuple[Path, ...] | None = None

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def nearest(self, vectors, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """Indices (n, k) and cosines (n, k) of the k gallery images closest to each row of vectors (n, E)."""
        X = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
        cos = X @ self.embeddings.T.astype(np.float64)
        k = min(int(k), len(self))
        idx = np.argsort(-cos, axis=1, kind="stable")[:, :k]
        return idx, np.take_along_axis(cos, idx, axis=1)

    def image(self, i: int) -> np.ndarray:
        """Gallery image i as uint8 (H, W, 3)."""
        if self.images is not None:
            return self.images[i]
        return np.asarray(_open_image(self.paths[i]))


def model_hash(model) -> str:
    """Hex digest of every parameter and buffer of ``model`` (names, shapes, dtypes, CRC-32 of the bytes)."""
    model = getattr(model, "model", model)
    tensors = sorted(dict(list(model.named_parameters()) + list(model.named_buffers())).items())
    h = hashlib.sha256()
    for record in openclip_text.tensor_digest_records(tensors):
        h.update(record)
    return h.hexdigest()


def _open_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise WeightscopeError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise WeightscopeError(f"cannot decode image {path} ({type(err).__name__}); give an image file ("
                               f"{', '.join(IMAGE_SUFFIXES)})") from None


def _encode(loaded, batches, total: int, progress: bool) -> np.ndarray:
    from tqdm.auto import tqdm

    from ..zeroshot import encode_images

    out = []
    with tqdm(total=total, unit="image", desc="embedding gallery", disable=not progress, leave=False) as bar:
        for x in batches:
            out.append(encode_images(loaded.model, x))
            bar.update(len(x))
    return np.concatenate(out).astype(np.float32)


def _cached(loaded, spec: dict, n: int, build, cache_dir, use_cache: bool) -> np.ndarray:
    if not use_cache:
        return build()
    key = hashlib.sha256(json.dumps({"format": _FORMAT, "model": model_hash(loaded), **spec},
                                    sort_keys=True).encode()).hexdigest()
    root = Path(cache_dir) if cache_dir is not None else embed.default_cache_dir()
    path = embed.cache_path(root, f"{loaded.name}-gallery", key)
    hit = embed._read_cache(path, key, n)
    if hit is not None:
        return hit
    emb = build()
    embed._write_cache(path, key, emb, {"model_name": loaded.name, "gallery": spec.get("kind")})
    return emb


def array_gallery(loaded, images: np.ndarray, captions, spec: dict, *, cache_dir=None, use_cache: bool = True,
                  progress: bool = True) -> Gallery:
    """A gallery of uint8 images (N, S, S, 3) already at the model's input size, normalised with CLIP's mean and
    std and embedded with the model's image tower. spec: what identifies the images in the cache key (their pixels
    and the normalisation are added); captions: N strings."""
    from ..zeroshot import MEAN, STD, images_to_tensor

    if len(images) < 1 or len(captions) != len(images):
        raise WeightscopeError(f"a gallery needs at least one image and one caption per image, got {len(images)} "
                               f"images and {len(captions)} captions")
    spec = {**spec, "pixels": zlib.crc32(np.ascontiguousarray(images).tobytes()), "mean": list(MEAN),
            "std": list(STD)}

    def build():
        batches = (images_to_tensor(images[i:i + 256]) for i in range(0, len(images), 256))
        return _encode(loaded, batches, len(images), progress)

    emb = _cached(loaded, spec, len(images), build, cache_dir, use_cache)
    return Gallery(emb, tuple(captions), images=images)


def folder_gallery(loaded, folder, *, max_images: int | None = None, cache_dir=None, use_cache: bool = True,
                   progress: bool = True) -> Gallery:
    """The images under ``folder`` (recursively, sorted), embedded with the model's own preprocessing."""
    import torch

    folder = Path(folder)
    if not folder.is_dir():
        raise WeightscopeError(f"gallery folder not found: {folder}")
    if loaded.preprocess is None:
        raise WeightscopeError("this model came without its image preprocessing; load it by name or checkpoint")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:max_images]
    if not files:
        raise WeightscopeError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    stats = [(str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    spec = {"kind": "folder", "folder": os.fspath(folder.resolve()), "files": stats}

    def build():
        batches = (torch.stack([loaded.preprocess(_open_image(p)) for p in files[i:i + 64]])
                   for i in range(0, len(files), 64))
        return _encode(loaded, batches, len(files), progress)

    emb = _cached(loaded, spec, len(files), build, cache_dir, use_cache)
    return Gallery(emb, tuple(s[0] for s in stats), paths=tuple(files))


def embed_image(loaded, path) -> np.ndarray:
    """The normalised image embedding (E,) float64 of one image file (raises WeightscopeError if it does not
    decode)."""
    import torch

    from ..zeroshot import encode_images

    if loaded.preprocess is None:
        raise WeightscopeError("this model came without its image preprocessing; load it by name or checkpoint")
    im = _open_image(Path(path))
    return encode_images(loaded.model, torch.stack([loaded.preprocess(im)]))[0].astype(np.float64)
