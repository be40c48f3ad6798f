"""Issue 26 kind 1: images are decoded as a viewer shows them, by the one reader every route uses.

Each case writes an image in a form real files come in and compares the decode with a reference decode (the
plain 8-bit RGB copy of the same picture)."""

import numpy as np
import pytest
from PIL import Image

from weightscope.core.errors import WeightscopeError
from weightscope.core.images import BACKGROUND, read_image

rng = np.random.default_rng(0)
GREY = rng.integers(0, 256, (32, 48)).astype(np.uint8)
RGB = rng.integers(0, 256, (32, 48, 3)).astype(np.uint8)


def _pixels(path):
    return np.asarray(read_image(path), dtype=np.float64)


def test_images_decoded_as_shown_16bit_grey(tmp_path):
    """The issue's input: a 16-bit grayscale PNG (I;16) reads as its 8-bit copy, not as an all-white square."""
    p = tmp_path / "grey16.png"
    Image.fromarray(GREY.astype(np.uint16) * 257).save(p)
    assert Image.open(p).mode == "I;16"
    got = _pixels(p)
    assert got.shape == (32, 48, 3)
    assert got.mean() == pytest.approx(GREY.mean(), abs=1e-9)      # the reference decode's statistics
    np.testing.assert_array_equal(got[..., 0], GREY)


def test_images_decoded_as_shown_16bit_tiff_and_float(tmp_path):
    Image.fromarray(GREY.astype(np.uint16) * 257).save(tmp_path / "g16.tif")
    Image.fromarray(GREY.astype(np.float32) / 255).save(tmp_path / "gf.tif")
    full = (GREY.astype(np.int64) * (2 ** 31 - 1) // 255).astype(np.int32)   # signed 32-bit, full range
    Image.fromarray(full).save(tmp_path / "g32.tif")
    np.testing.assert_array_equal(_pixels(tmp_path / "g16.tif")[..., 1], GREY)
    np.testing.assert_array_equal(_pixels(tmp_path / "gf.tif")[..., 2], GREY)
    np.testing.assert_array_equal(_pixels(tmp_path / "g32.tif")[..., 0], GREY)


def test_images_decoded_as_shown_exif_orientation(tmp_path):
    """A phone photo stored sideways with EXIF Orientation 6 (rotate 90 deg clockwise to view) is read upright."""
    upright = Image.fromarray(RGB)
    stored = upright.transpose(Image.Transpose.ROTATE_90)      # what the camera wrote
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "phone.png"
    stored.save(p, exif=exif)
    got = _pixels(p)
    assert got.shape == (32, 48, 3)
    np.testing.assert_array_equal(got, RGB)


def test_images_decoded_as_shown_alpha_and_palette(tmp_path):
    """Alpha is composited on the stated background (white); a palette image reads as its colours."""
    alpha = np.zeros((32, 48), np.uint8)
    alpha[:, 24:] = 255
    alpha[:16, :24] = 128
    Image.fromarray(np.dstack([RGB, alpha])).save(tmp_path / "rgba.png")
    a = alpha[..., None].astype(np.float64) / 255
    want = RGB * a + np.asarray(BACKGROUND) * (1 - a)
    assert BACKGROUND == (255, 255, 255)
    assert np.abs(_pixels(tmp_path / "rgba.png") - want).max() <= 1.0
    pal = Image.fromarray(RGB).quantize(16)
    pal.save(tmp_path / "pal.png")
    np.testing.assert_array_equal(_pixels(tmp_path / "pal.png"), np.asarray(pal.convert("RGB")))
    Image.fromarray(np.dstack([GREY, alpha]), "LA").save(tmp_path / "la.png")
    want = GREY * a[..., 0] + 255 * (1 - a[..., 0])
    assert np.abs(_pixels(tmp_path / "la.png")[..., 0] - want).max() <= 1.0


def test_images_decoded_as_shown_colour_spaces(tmp_path):
    """CMYK and CIELAB files read as sRGB close to the RGB they were made from; an embedded sRGB profile is
    honoured (the identity transform)."""
    from PIL import ImageCms

    src = Image.fromarray(RGB)
    src.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    got = _pixels(tmp_path / "cmyk.jpg")
    assert got.shape == (32, 48, 3) and np.abs(got - RGB).mean() < 12
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src.save(tmp_path / "icc.png", icc_profile=srgb)
    assert np.abs(_pixels(tmp_path / "icc.png") - RGB).max() <= 2
    lab = ImageCms.profileToProfile(src, ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"),
                                    outputMode="LAB")
    lab.save(tmp_path / "lab.tif")
    assert np.abs(_pixels(tmp_path / "lab.tif") - RGB).mean() < 3


def test_images_decoded_as_shown_refusals(tmp_path, monkeypatch):
    """What cannot be read, or is too large to decode safely, is refused in one line naming the file."""
    import weightscope.core.images as images

    (tmp_path / "notes.png").write_text("not an image")
    Image.fromarray(RGB).save(tmp_path / "big.png")
    raw = (tmp_path / "big.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(raw[: len(raw) // 2])
    for name in ("notes.png", "cut.png", "missing.png"):
        with pytest.raises(WeightscopeError) as err:
            read_image(tmp_path / name)
        assert name in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    with pytest.raises(WeightscopeError, match="decompression bomb"):
        read_image(tmp_path / "big.png")


def test_images_decoded_as_shown_every_route(tmp_path):
    """sing's folder reader, the gallery's reader, similarity's folder inputs and inspect's folder check all
    decode the 16-bit file as its 8-bit copy."""
    from weightscope.analyses.similarity.sources import FolderInputs
    from weightscope.analyses.sing import gallery
    from weightscope.analyses.sing.inputs import folder_images
    from weightscope.commands.inspect import check_image_folder

    Image.fromarray(GREY.astype(np.uint16) * 257).save(tmp_path / "a16.png")
    Image.fromarray(GREY).save(tmp_path / "b8.png")
    files, pil, n = folder_images(tmp_path)
    assert n == 2 and [p.name for p in files] == ["a16.png", "b8.png"]
    np.testing.assert_array_equal(np.asarray(pil[0]), np.asarray(pil[1]))
    np.testing.assert_array_equal(np.asarray(gallery._open_image(tmp_path / "a16.png"))[..., 0], GREY)
    x = FolderInputs(files, lambda im: __import__("torch").from_numpy(np.asarray(im).copy()))[0:2]
    assert (x[0] == x[1]).all()
    check_image_folder(tmp_path)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(WeightscopeError, match="broken.jpg"):
        check_image_folder(tmp_path)
