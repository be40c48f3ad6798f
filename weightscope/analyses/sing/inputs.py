"""What SING part 2 reads: the texts it scores and the images it embeds (``sing.classifier`` uses these).

- texts: a texts file, one per line (SING's class text is ``analysis.class_text``);
- images: uint8 arrays or a folder of images (sampled evenly when large), and their CLIP image embeddings. The
  bundled defaults (``weightscope.bundled``) supply generated shapes-world scenes and the attribute texts.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...core.errors import WeightscopeError

MAX_FOLDER_IMAGES = 2000


def read_texts(path) -> list[str]:
    """Texts from a file, one per line (blank lines and lines starting with '#' skipped). Raises WeightscopeError
    for a missing or undecodable file, no texts, or a repeated text."""
    p = Path(path)
    if p.is_dir():
        raise WeightscopeError(f"{p} is a folder; give a text file with one text per line")
    if not p.is_file():
        raise WeightscopeError(f"texts file not found: {p} (give a text file with one text per line)")
    try:
        lines = p.read_text(encoding="utf-8-sig").splitlines()
    except (UnicodeDecodeError, OSError) as err:
        raise WeightscopeError(f"cannot read texts file {p}: {type(err).__name__}; give UTF-8 text, one text per "
                               "line") from None
    texts = [" ".join(ln.split()) for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not texts:
        raise WeightscopeError(f"texts file {p} holds no texts; write one text per line, e.g. 'a red object'")
    seen: dict[str, int] = {}
    for i, t in enumerate(texts):
        if seen.setdefault(t.lower(), i) != i:
            raise WeightscopeError(f"texts file {p} repeats {t!r}; give each text once")
    return texts


def clip_image_embeddings(loaded, images: np.ndarray) -> np.ndarray:
    """Normalised image embeddings (N, E) float64 of uint8 images (N, S, S, 3) at the model's input size."""
    from ..zeroshot import images_to_tensor
    from ..zeroshot import encode_images

    return np.concatenate([encode_images(loaded.model, images_to_tensor(images[i:i + 500]))
                           for i in range(0, len(images), 500)]).astype(np.float64)


def _clip_embed_pil(loaded, pil_images) -> np.ndarray:
    from ..zeroshot import encode_images

    if loaded.preprocess is None:
        raise WeightscopeError("this CLIP model came without its image preprocessing; load it by name or checkpoint")
    return encode_images(loaded.model, list(pil_images), preprocess=loaded.preprocess).astype(np.float64)


def folder_images(folder, max_images: int = MAX_FOLDER_IMAGES):
    """(files, PIL images, number of images found) under ``folder`` (recursively, sorted by path; when there are more
    than ``max_images``, that many evenly spaced over the sorted list). Raises WeightscopeError for a missing folder,
    a folder without images, or an image that does not decode (naming it)."""
    from .gallery import IMAGE_SUFFIXES, _open_image

    folder = Path(folder)
    if not folder.is_dir():
        raise WeightscopeError(f"image folder not found: {folder} (give a folder of images)")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise WeightscopeError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}; give a folder of images")
    n_found = len(files)
    if n_found > max_images:       # evenly spaced over the sorted paths, so every subfolder stays represented
        files = [files[i] for i in np.linspace(0, n_found - 1, max_images).round().astype(int)]
    return files, [_open_image(p) for p in files], n_found
