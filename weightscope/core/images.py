"""The one image reader: every route that reads image files (sing --image/--images/--gallery, inspect --image-mean,
similarity's and depth's image folders, translator fitting) decodes them here, as an image viewer shows them.

:func:`read_image` returns an 8-bit sRGB PIL image:

- orientation: the EXIF Orientation tag is applied (a phone photo stored sideways is shown upright);
- bit depth: 16-bit greys (``I;16*``) and 32-bit integers (``I``) are scaled from their full range
  (0..2**bits - 1, bits from the file's BitsPerSample, 16 when the file does not say) to 0..255, rounded; float
  images (``F``) are taken as 0..1 (the float TIFF convention), clipped; 1-bit images become 0 / 255;
- palette: expanded to its colours, palette transparency included;
- alpha (RGBA, LA, PA, palette transparency): composited on a **white** background (:data:`BACKGROUND`), as a
  browser shows a transparent image on a white page;
- colour space: an embedded ICC profile (Adobe RGB, Display P3, a CMYK press profile ...) is converted to sRGB
  (perceptual intent) with LittleCMS; CMYK without a profile, YCbCr and HSV use Pillow's conversions; CIELAB
  goes through a LAB -> sRGB transform;
- animations: the first frame.

What cannot be read (missing file, not an image, a truncated file, an unsupported mode) or is larger than
:data:`MAX_PIXELS` (a decompression bomb: a small file that expands to gigabytes) raises a one-line
WeightscopeError naming the file, before any pixel is decoded where the header tells.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .errors import WeightscopeError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
BACKGROUND = (255, 255, 255)  # alpha is composited on white
MAX_PIXELS = 100_000_000      # 100 megapixels (10000 x 10000): about 400 MB decoded as RGBA


def list_images(folder, what: str = "image folder", recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` (suffix in :data:`IMAGE_SUFFIXES`, any case), sorted by path; hidden files
    (names starting with '.', e.g. macOS ``._x.jpg`` resource forks) are skipped. Raises WeightscopeError (naming
    ``what``) for a missing folder or one without images."""
    folder = Path(folder)
    if not folder.is_dir():
        raise WeightscopeError(f"{what} not found: {folder} (give a folder of images)")
    found = folder.rglob("*") if recursive else folder.iterdir()
    files = sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
                   and p.is_file())
    if not files:
        raise WeightscopeError(f"{what} {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _depth(im) -> tuple[int, bool]:
    """(bits per sample, signed) of a grey image of more than 8 bits, from the file's tags where it has them."""
    tags = getattr(im, "tag_v2", None) or {}
    bits, fmt = tags.get(258), tags.get(339)
    bits = bits[0] if isinstance(bits, (tuple, list)) and bits else bits
    fmt = fmt[0] if isinstance(fmt, (tuple, list)) and fmt else fmt
    if not bits:
        bits = 32 if im.mode == "I" and im.format not in ("PNG", None) else 16
    return int(bits), fmt == 2


def _to_8bit(im, depth: tuple[int, bool]):
    """Greys of more than 8 bits and floats -> mode L, scaled from their full range."""
    from PIL import Image

    a = np.asarray(im)
    if im.mode == "F":
        out = np.clip(np.nan_to_num(a.astype(np.float64), nan=0.0), 0.0, 1.0) * 255.0
    else:
        bits, signed = depth
        top = float(2 ** (bits - 1) - 1 if signed else 2 ** bits - 1)
        out = np.clip(a.astype(np.float64), 0.0, top) * (255.0 / top)
    return Image.fromarray(np.rint(out).astype(np.uint8))


def _srgb(im):
    """Convert with the embedded ICC profile (if any) to sRGB; modes without a profile use Pillow's conversions."""
    from PIL import ImageCms

    icc = im.info.get("icc_profile")
    if im.mode == "LAB":
        lab = ImageCms.createProfile("LAB")
        return ImageCms.profileToProfile(im, lab, ImageCms.createProfile("sRGB"), outputMode="RGB")
    if icc:
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            mode = im.mode if im.mode in ("RGB", "CMYK", "L") else None
            if mode is not None:
                return ImageCms.profileToProfile(im.convert(mode), src, ImageCms.createProfile("sRGB"),
                                                 outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a damaged profile: the pixels as stored, as most viewers do
    return im.convert("RGB")


def _decode(im):
    from PIL import Image, ImageOps

    im.seek(0)
    depth = _depth(im)       # before the transpose, which drops the file's tags
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        im = _to_8bit(im, depth)
    if im.mode == "1":
        im = im.convert("L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode in ("L", "RGB") and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        back = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(back, rgba).convert("RGB")
    return _srgb(im)


def read_image(path, what: str = "image"):
    """The image file ``path`` as an 8-bit sRGB PIL image, decoded as a viewer shows it (module docstring).

    Raises WeightscopeError (one line, naming ``what`` and the file) when it cannot be read or is too large."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise WeightscopeError(f"{what} not found: {path}" if not path.is_dir() else
                               f"{what} {path} is a folder; give an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise WeightscopeError(f"{what} {path} is {w} x {h} pixels, more than the {MAX_PIXELS:,} read "
                                           "safely (a decompression bomb?); resize it first")
                im.load()
                return _decode(im)
    except WeightscopeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise WeightscopeError(f"{what} {path} is too large to decode safely ({err}); resize it first") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, KeyError) as err:
        kind = "not an image Pillow reads" if isinstance(err, UnidentifiedImageError) else \
            f"{type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else 'unreadable'}"
        raise WeightscopeError(f"cannot decode {what} {path} ({kind}); give a readable image file "
                               f"({', '.join(IMAGE_SUFFIXES)})") from None


def check_images(files, what: str = "image") -> None:
    """Decode every file (cheap next to a model's forward pass) so that a bad one is named before any work."""
    for p in files:
        read_image(p, what)
