"""The procedural "shapes world": small images of coloured shapes with captions, generated from a seed.

Every image is ``IMAGE_SIZE x IMAGE_SIZE`` RGB (uint8, shape (N, S, S, 3)) and holds one or two objects on a
noisy single-colour background. Each object has

- a shape: one of ``SHAPES`` (8), split into two families, ``ROUND_SHAPES`` (circle, oval, ring, crescent) and
  ``ANGULAR_SHAPES`` (square, triangle, diamond, star);
- a colour: one of ``COLOURS`` (8 names with an RGB value each, jittered per object);
- a size: ``SIZES`` ("small", "large");
- a position: one of the nine cells of a 3 x 3 grid, ``POSITIONS`` ("top left", "top", ..., "center", ...,
  "bottom right"); two objects never share a cell.

The background has a colour from ``BACKGROUNDS`` (blue, green, gray, black); an object never has the same
colour name as its background (it would be invisible or ambiguous).

Spurious correlation (the Waterbirds-style part). In the pre-training distribution the background colour
depends on the shape *family* of the first object: with probability ``spurious_strength`` (default 0.9) it is
the family's "home" background (``HOME_BACKGROUND``: round -> blue, angular -> green), otherwise it is drawn
uniformly from the three other backgrounds. So P(blue | round) = P(green | angular) = 0.9, and the
counter-correlated cases P(green | round) = P(blue | angular) = 0.1 / 3. ``spurious_strength=None`` makes
the background independent of the shapes (uniform). ``group_split`` builds the balanced evaluation set:
single objects, family x {blue, green} background, equally many of each of the four groups.

Captions name the attributes in several phrasings (see ``caption_scene``): every caption mentions each
attribute of each object only with some probability (shape 85%, colour 75%, size 45%, position 60%) and
the background with probability ``p_background`` (50%), so the text tower learns every word on its own and
in combination, e.g. "a small red circle in the top left on a blue background", "a photo of a green
object", "a blue background with a large star at the bottom", "a ring that is pink".

Everything is deterministic given the seed (numpy ``default_rng``); rendering of a batch of 256 images takes a
few milliseconds because every shape is evaluated as a vectorised signed-distance function on the pixel grid
(anti-aliased over one pixel).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from weightscope.core.errors import WeightscopeError

IMAGE_SIZE = 48

SHAPES = ("circle", "oval", "ring", "crescent", "square", "triangle", "diamond", "star")
ROUND_SHAPES = SHAPES[:4]
ANGULAR_SHAPES = SHAPES[4:]
FAMILIES = ("round", "angular")
# family index of each shape index
SHAPE_FAMILY = np.array([0, 0, 0, 0, 1, 1, 1, 1])

COLOURS = {
    "red": (215, 35, 35),
    "orange": (245, 140, 20),
    "yellow": (240, 225, 40),
    "green": (40, 175, 60),
    "blue": (40, 90, 225),
    "purple": (135, 55, 190),
    "pink": (250, 135, 195),
    "white": (245, 245, 245),
}
COLOUR_NAMES = tuple(COLOURS)

# Backgrounds are muted so that a same-hue object would still be told apart, but we never draw one anyway.
BACKGROUNDS = {
    "blue": (55, 95, 165),
    "green": (55, 130, 65),
    "gray": (125, 125, 125),
    "black": (25, 25, 25),
}
BACKGROUND_NAMES = tuple(BACKGROUNDS)
# index of the object colour with the same name as each background (-1: none)
_BG_CLASH = np.array([COLOUR_NAMES.index(b) if b in COLOURS else -1 for b in BACKGROUND_NAMES])

HOME_BACKGROUND = {"round": "blue", "angular": "green"}
_HOME_BG_INDEX = np.array([BACKGROUND_NAMES.index(HOME_BACKGROUND[f]) for f in FAMILIES])

SIZES = ("small", "large")
POSITIONS = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)

# Half-extent of an object in pixels at IMAGE_SIZE=48 (scaled with the image size); cells are S/3 wide.
_RADIUS = {"small": 4.5, "large": 7.0}
_PAD = -1  # marks an absent object slot


@dataclass(frozen=True)
class Scenes:
    """Attribute indices of N scenes with up to K objects (slots beyond ``n_objects`` hold -1).

    shape, colour, size, position: (N, K) int64 indices into SHAPES, COLOUR_NAMES, SIZES, POSITIONS.
    background: (N,) index into BACKGROUND_NAMES. n_objects: (N,).
    Continuous render parameters: centre (N, K, 2) in pixels (x, y), radius (N, K) in pixels,
    tint (N, K, 3) colour jitter, bg_tint (N, 3), aspect_flip (N, K) bool (vertical ovals).
    """

    shape: np.ndarray
    colour: np.ndarray
    size: np.ndarray
    position: np.ndarray
    background: np.ndarray
    n_objects: np.ndarray
    centre: np.ndarray
    radius: np.ndarray
    tint: np.ndarray
    bg_tint: np.ndarray
    aspect_flip: np.ndarray
    image_size: int

    def __len__(self) -> int:
        return int(self.shape.shape[0])

    @property
    def family(self) -> np.ndarray:
        """(N,) shape family (0 round, 1 angular) of the first object."""
        return SHAPE_FAMILY[self.shape[:, 0]]


def _rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def sample_scenes(
    n: int,
    seed=0,
    *,
    max_objects: int = 2,
    p_two: float = 0.25,
    spurious_strength: float | None = 0.9,
    image_size: int = IMAGE_SIZE,
    shape: np.ndarray | None = None,
    background: np.ndarray | None = None,
) -> Scenes:
    """Draw N scenes.

    n: number of scenes; seed: int, sequence of ints or a numpy Generator.
    max_objects: 1 or 2 slots; p_two: probability of a second object when max_objects == 2.
    spurious_strength: P(home background | family of the first object) in [0, 1], or None for backgrounds
    independent of shape (uniform over BACKGROUNDS).
    shape / background: optional (N,) forced indices for the first object's shape and the background
    (used by ``group_split``); forcing the background bypasses the spurious sampling.
    """
    if n < 0:
        raise WeightscopeError(f"number of scenes must be >= 0, got {n}")
    if max_objects not in (1, 2):
        raise WeightscopeError(f"max_objects must be 1 or 2, got {max_objects}")
    if spurious_strength is not None and not 0.0 <= spurious_strength <= 1.0:
        raise WeightscopeError(f"spurious_strength must be in [0, 1] or None, got {spurious_strength}")
    if image_size < 24:
        raise WeightscopeError(f"image_size must be >= 24 pixels to draw a 3x3 grid of shapes, got {image_size}")
    rng = _rng(seed)
    K = max_objects
    n_obj = np.ones(n, dtype=np.int64)
    if K == 2:
        n_obj += rng.random(n) < p_two
    present = np.arange(K)[None, :] < n_obj[:, None]

    shapes = rng.integers(0, len(SHAPES), size=(n, K))
    if shape is not None:
        shapes[:, 0] = np.asarray(shape, dtype=np.int64)
    fam = SHAPE_FAMILY[shapes[:, 0]]

    nb = len(BACKGROUNDS)
    if background is not None:
        bg = np.asarray(background, dtype=np.int64).copy()
    elif spurious_strength is None:
        bg = rng.integers(0, nb, size=n)
    else:
        home = _HOME_BG_INDEX[fam]
        other = (home + rng.integers(1, nb, size=n)) % nb  # uniform over the other three
        bg = np.where(rng.random(n) < spurious_strength, home, other)

    # Colours uniform over the 7 names that differ from the background's.
    colours = rng.integers(0, len(COLOURS) - 1, size=(n, K))
    clash = _BG_CLASH[bg][:, None]
    colours = np.where((clash >= 0) & (colours >= clash), colours + 1, colours)

    sizes = rng.integers(0, len(SIZES), size=(n, K))
    # distinct cells: a random permutation of the 9 cells per scene
    positions = np.argsort(rng.random((n, len(POSITIONS))), axis=1)[:, :K]

    scale = image_size / 48.0
    cell = image_size / 3.0
    radius = np.array([_RADIUS[s] for s in SIZES])[sizes] * scale * rng.uniform(0.9, 1.1, size=(n, K))
    slack = np.maximum(cell / 2 - radius - 0.5, 0.0)
    jitter = rng.uniform(-0.6, 0.6, size=(n, K, 2)) * slack[..., None]
    col, row = positions % 3, positions // 3
    centre = np.stack([(col + 0.5) * cell, (row + 0.5) * cell], axis=-1) + jitter
    tint = rng.integers(-14, 15, size=(n, K, 3))
    bg_tint = rng.integers(-12, 13, size=(n, 1)) + rng.integers(-5, 6, size=(n, 3))
    aspect_flip = rng.random((n, K)) < 0.5

    def mask(a):
        return np.where(present, a, _PAD)

    return Scenes(
        shape=mask(shapes), colour=mask(colours), size=mask(sizes), position=mask(positions),
        background=bg, n_objects=n_obj, centre=centre, radius=radius, tint=tint, bg_tint=bg_tint,
        aspect_flip=aspect_flip, image_size=image_size,
    )


# ---------------------------------------------------------------- rendering

def _sdf(shape: str, x: np.ndarray, y: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """Signed distance (object units, negative inside) of a unit-sized shape at points (x, y), y pointing up.

    x, y: (n, S, S); flip: (n, 1, 1) bool, swaps the axes of the oval (vertical instead of horizontal).
    Distances outside are approximate for some shapes; they only feed a one-pixel anti-aliasing ramp.
    """
    r = np.hypot(x, y)
    if shape == "circle":
        return r - 0.95
    if shape == "oval":
        xx, yy = np.where(flip, y, x), np.where(flip, x, y)
        a, b = 1.0, 0.6
        k0 = np.hypot(xx / a, yy / b)
        k1 = np.hypot(xx / a**2, yy / b**2)
        return k0 * (k0 - 1.0) / np.maximum(k1, 1e-9)
    if shape == "ring":
        return np.abs(r - 0.68) - 0.3
    if shape == "crescent":
        inner = np.hypot(x - 0.45, y - 0.1) - 0.8
        return np.maximum(r - 1.0, -inner)
    if shape == "square":
        qx, qy = np.abs(x) - 0.8, np.abs(y) - 0.8
        out = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
        return out + np.minimum(np.maximum(qx, qy), 0.0)
    if shape == "diamond":
        return (np.abs(x) + np.abs(y) - 1.05) / np.sqrt(2.0)
    if shape == "triangle":
        yy = y + 0.28  # centre the triangle's bounding box
        c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
        d = np.maximum(np.maximum(-yy, c * x + s * yy), -c * x + s * yy)
        return d - 0.56
    if shape == "star":
        theta = np.arctan2(y, x) - np.pi / 2
        sector = 2 * np.pi / 5
        phi = np.mod(theta, sector)
        t = np.abs(phi - sector / 2) / (sector / 2)  # 1 at a tip, 0 between tips
        rb = 0.42 + (1.05 - 0.42) * t
        return (r - rb) * 0.55
    raise AssertionError(shape)


def _object_distances(scenes: Scenes):
    """Per object slot k and shape: (k, idx, d, rad) for the scenes ``idx`` whose object k has that shape, with
    d (m, S, S) its signed distance in radius units at each pixel centre and rad (m, 1, 1) its radius in pixels."""
    S = scenes.image_size
    pix = np.arange(S, dtype=np.float32) + 0.5
    for k in range(scenes.shape.shape[1]):
        for s_idx, s_name in enumerate(SHAPES):
            idx = np.flatnonzero(scenes.shape[:, k] == s_idx)
            if idx.size == 0:
                continue
            rad = scenes.radius[idx, k].astype(np.float32)[:, None, None]
            cx = scenes.centre[idx, k, 0].astype(np.float32)[:, None, None]
            cy = scenes.centre[idx, k, 1].astype(np.float32)[:, None, None]
            x = (pix[None, None, :] - cx) / rad
            y = (cy - pix[None, :, None]) / rad
            yield k, idx, _sdf(s_name, x, y, scenes.aspect_flip[idx, k][:, None, None]), rad


def render(scenes: Scenes, seed=0) -> np.ndarray:
    """Render scenes to uint8 images (N, S, S, 3); seed drives only the pixel noise of the background."""
    rng = _rng(seed)
    n, S = len(scenes), scenes.image_size
    bg = np.array(list(BACKGROUNDS.values()), dtype=np.float32)[scenes.background] + scenes.bg_tint
    img = np.broadcast_to(bg[:, None, None, :], (n, S, S, 3)).astype(np.float32)
    img += 6.0 * rng.standard_normal(size=(n, S, S, 3), dtype=np.float32)
    palette = np.array(list(COLOURS.values()), dtype=np.float32)
    for k, idx, d, rad in _object_distances(scenes):
        alpha = np.clip(0.5 - d * rad, 0.0, 1.0)[..., None]
        col = (palette[scenes.colour[idx, k]] + scenes.tint[idx, k])[:, None, None, :]
        img[idx] = img[idx] * (1.0 - alpha) + col * alpha
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- captions

_NOUNS = ("object", "shape", "thing")
_PREFIXES = ("", "", "", "a photo of ", "an image of ", "a picture of ")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _object_phrase(scenes: Scenes, i: int, k: int, rng: np.random.Generator, force_shape: bool) -> str:
    """One object, e.g. "a small red circle in the top left", with each attribute included at random."""
    shape = SHAPES[scenes.shape[i, k]]
    colour = COLOUR_NAMES[scenes.colour[i, k]]
    size = SIZES[scenes.size[i, k]]
    pos = POSITIONS[scenes.position[i, k]]
    u = rng.random(4)
    say_shape = force_shape or u[0] < 0.85
    say_colour, say_size, say_pos = u[1] < 0.75, u[2] < 0.45, u[3] < 0.6
    # a bare "an object" says nothing; name the shape then
    say_shape = say_shape or not (say_colour or say_size or say_pos)
    noun = shape if say_shape else _NOUNS[rng.integers(len(_NOUNS))]
    style = rng.integers(4)
    where = ""
    if say_pos:
        where = (" in the " if style != 3 or pos in ("center",) else " at the ") + pos
    if say_colour and style == 1:
        # "a large circle that is red in the top left"
        adj = f"{size} " if say_size else ""
        phrase = f"{adj}{noun} that is {colour}"
        return f"{_article(phrase)} {phrase}{where}"
    adj = (f"{size} " if say_size else "") + (f"{colour} " if say_colour else "")
    phrase = f"{adj}{noun}"
    return f"{_article(phrase)} {phrase}{where}"


def caption_scene(scenes: Scenes, i: int, rng: np.random.Generator, p_background: float = 0.5) -> str:
    """A random caption for scene i naming (a random subset of) its true attributes.

    Phrasings: "[prefix] <object> [and <object>] [on a <bg> background]" or
    "a <bg> background with <object> [and <object>]", where <object> is "[a|an] [size] [colour] <noun>
    [in the <position>]" or "[a|an] [size] <noun> that is <colour> [in the <position>]", noun being the shape
    name or a generic "object"/"shape"/"thing". A caption always names something true about the scene.
    """
    n_obj = int(scenes.n_objects[i])
    bg = BACKGROUND_NAMES[scenes.background[i]]
    say_bg = rng.random() < p_background
    objs = [_object_phrase(scenes, i, k, rng, force_shape=False) for k in range(n_obj)]
    body = " and ".join(objs)
    if say_bg and rng.random() < 0.3:
        return f"a {bg} background with {body}"
    prefix = _PREFIXES[rng.integers(len(_PREFIXES))]
    text = f"{prefix}{body}"
    if say_bg:
        text += f" on a {bg} background"
    return text


# per-object attributes and their class names (index i of a Scenes field names class i)
ATTRIBUTES = {"shape": SHAPES, "colour": COLOUR_NAMES, "size": SIZES, "position": POSITIONS}


def attribute_captions(attribute: str, rng: np.random.Generator) -> list[str]:
    """One caption per class of ``attribute`` naming only that attribute, all in one phrasing drawn from rng.

    E.g. position: ["a photo of a thing in the top left", ..., "a photo of a thing in the bottom right"];
    shape: ["a circle", ..., "a star"]. The phrasings are those of ``caption_scene``, so these are ordinary
    captions of the world; they differ from each other only in the attribute's words.
    """
    if attribute not in ATTRIBUTES:
        raise WeightscopeError(f"unknown attribute {attribute!r}; choose one of {sorted(ATTRIBUTES)}")
    prefix = _PREFIXES[rng.integers(len(_PREFIXES))]
    noun = _NOUNS[rng.integers(len(_NOUNS))]
    if attribute == "shape":
        phrases = list(SHAPES)
    elif attribute == "position":
        phrases = [f"{noun} in the {p}" for p in POSITIONS]
    elif rng.random() < 0.5:  # colour and size: "a red object" or "an object that is red"
        phrases = [f"{v} {noun}" for v in ATTRIBUTES[attribute]]
    else:
        return [f"{prefix}{_article(noun)} {noun} that is {v}" for v in ATTRIBUTES[attribute]]
    return [f"{prefix}{_article(ph)} {ph}" for ph in phrases]


def captions(scenes: Scenes, seed=0, p_background: float = 0.5) -> list[str]:
    """One random caption per scene (list of N strings), deterministic given seed."""
    rng = _rng(seed)
    return [caption_scene(scenes, i, rng, p_background) for i in range(len(scenes))]


def full_caption(scenes: Scenes, i: int) -> str:
    """The canonical caption naming every attribute, e.g. "a small red circle in the top left on a blue background"."""
    parts = []
    for k in range(int(scenes.n_objects[i])):
        phrase = f"{SIZES[scenes.size[i, k]]} {COLOUR_NAMES[scenes.colour[i, k]]} {SHAPES[scenes.shape[i, k]]}"
        parts.append(f"{_article(phrase)} {phrase} in the {POSITIONS[scenes.position[i, k]]}")
    return " and ".join(parts) + f" on a {BACKGROUND_NAMES[scenes.background[i]]} background"


# ---------------------------------------------------------------- batches and splits

@dataclass(frozen=True)
class Batch:
    """images: (N, S, S, 3) uint8; captions: N strings; scenes: the attributes that produced them."""

    images: np.ndarray
    captions: list[str]
    scenes: Scenes


def generate(
    n: int,
    seed=0,
    *,
    max_objects: int = 2,
    p_two: float = 0.25,
    spurious_strength: float | None = 0.9,
    p_background: float = 0.5,
    image_size: int = IMAGE_SIZE,
) -> Batch:
    """N images with captions from one seed (the pre-training distribution with the defaults)."""
    rng = _rng(seed)
    sc = sample_scenes(n, rng, max_objects=max_objects, p_two=p_two,
                       spurious_strength=spurious_strength, image_size=image_size)
    return Batch(images=render(sc, rng), captions=captions(sc, rng, p_background), scenes=sc)


def single_objects(n: int, seed=0, *, spurious_strength: float | None = 0.9,
                   image_size: int = IMAGE_SIZE) -> tuple[np.ndarray, Scenes]:
    """N one-object images (the zero-shot evaluation set): (images (N, S, S, 3) uint8, scenes)."""
    rng = _rng(seed)
    sc = sample_scenes(n, rng, max_objects=1, spurious_strength=spurious_strength, image_size=image_size)
    return render(sc, rng), sc


GROUP_NAMES = tuple(f"{fam} on {bg}" for fam in FAMILIES for bg in ("blue", "green"))


def group_split(n_per_group: int, seed=0, *, image_size: int = IMAGE_SIZE):
    """The Waterbirds-style evaluation split: single objects, 4 equally sized groups.

    Groups (``GROUP_NAMES``): 0 "round on blue" (common), 1 "round on green" (rare), 2 "angular on blue"
    (rare), 3 "angular on green" (common). Shapes are uniform within their family.
    Returns (images (4n, S, S, 3) uint8, labels (4n,) family 0/1, groups (4n,) in 0..3, scenes).
    """
    if n_per_group <= 0:
        raise WeightscopeError(f"n_per_group must be a positive integer, got {n_per_group}")
    rng = _rng(seed)
    groups = np.repeat(np.arange(4), n_per_group)
    fam = groups // 2
    bg_name = np.array(["blue", "green"])[groups % 2]
    bg = np.array([BACKGROUND_NAMES.index(b) for b in bg_name])
    shape = np.where(fam == 0, 0, 4) + rng.integers(0, 4, size=groups.size)
    sc = sample_scenes(groups.size, rng, max_objects=1, shape=shape, background=bg, image_size=image_size)
    return render(sc, rng), fam, groups, sc


def concept_vocabulary() -> list[str]:
    """The shapes-world concepts, one per entry, as shipped in concepts/shapes_world.txt.

    Single words (shapes, colours, backgrounds, sizes, positions, families, caption nouns), then short
    phrases: "<family> shape", "<bg> background", "in the <position>", "<size> <shape>", "<colour> <shape>",
    "<colour> object", "<shape> on a <bg> background". Order is fixed; duplicates are dropped.
    """
    out: list[str] = []

    def add(x):
        if x not in out:
            out.append(x)

    for group in (SHAPES, COLOUR_NAMES, BACKGROUND_NAMES, SIZES, POSITIONS, FAMILIES,
                  ("shape", "object", "thing", "background", "photo", "image", "picture")):
        for x in group:
            add(x)
    for f in FAMILIES:
        add(f"{f} shape")
    for b in BACKGROUND_NAMES:
        add(f"{b} background")
    for p in POSITIONS:
        add(f"in the {p}")
    for s in SIZES:
        for sh in SHAPES:
            add(f"{s} {sh}")
    for c in COLOUR_NAMES:
        for sh in SHAPES:
            add(f"{c} {sh}")
    for c in COLOUR_NAMES:
        add(f"{c} object")
    for sh in SHAPES:
        for b in BACKGROUND_NAMES:
            add(f"{sh} on a {b} background")
    return out


if __name__ == "__main__":  # python -m weightscope.shapes.world > concepts/shapes_world.txt
    print("\n".join(concept_vocabulary()))


# ---------------------------------------------------------------- concept masks

MASK_CONCEPTS = ("shape", "colour", "size", "position", "background")


def object_masks(scenes: Scenes) -> np.ndarray:
    """(N, K, S, S) bool: the pixels inside object k of each scene (the shapes ``render`` draws, before
    anti-aliasing: signed distance <= 0, i.e. the pixels render covers at least half). Absent objects are empty."""
    n, S, K = len(scenes), scenes.image_size, scenes.shape.shape[1]
    out = np.zeros((n, K, S, S), dtype=bool)
    for k, idx, d, _ in _object_distances(scenes):
        out[idx, k] = d <= 0
    return out


def concept_names() -> list[str]:
    """Names of the mask concepts, "<group>:<value>": 8 shapes, 8 colours, 2 sizes, 9 positions, 4 backgrounds."""
    groups = (SHAPES, COLOUR_NAMES, SIZES, POSITIONS, BACKGROUND_NAMES)
    return [f"{g}:{v}" for g, values in zip(MASK_CONCEPTS, groups) for v in values]


def concept_masks(scenes: Scenes) -> np.ndarray:
    """(N, C, S, S) bool pixel masks of the concepts of ``concept_names()``, in that order.

    An object concept ("shape:circle", "colour:red", "size:small", "position:top left") covers the pixels of the
    objects that have it; "background:<b>" covers the pixels outside every object of images whose background is b.
    """
    obj = object_masks(scenes)
    fields = (scenes.shape, scenes.colour, scenes.size, scenes.position)
    groups = (SHAPES, COLOUR_NAMES, SIZES, POSITIONS)
    planes = []
    for field_values, values in zip(fields, groups):
        for v in range(len(values)):
            planes.append(np.any(obj & (field_values == v)[:, :, None, None], axis=1))
    free = ~obj.any(axis=1)
    for b in range(len(BACKGROUND_NAMES)):
        planes.append(free & (scenes.background == b)[:, None, None])
    return np.stack(planes, axis=1)
