"""Procedurally rendered scenes: the embedded default dataset (no files).

Each scene is a mottled ground ("background") with two textured "stuff"
regions (grass-like noise, water-like stripes) and a handful of objects
(disks, boxes, triangles, rings) drawn in random order, so later objects
occlude earlier ones. What tells the classes apart is what tells real
classes apart:
- shape (objects share one colour distribution, so colour is useless),
- texture (every class has its own: stuff by fine noise or stripes, the
  ground by soft blotches, disks by a lit sphere with a spot lattice, boxes
  by grid lines, triangles by a checkerboard finer than the ground's
  blotches, rings by spokes), visible from a part of an object, as in real
  images,
- context (boat-like rings prefer water, disks prefer grass).
Thin clutter strokes occlude everything, and a random illumination field,
colour cast, gamma, haze and sensor noise change the appearance of every
image, which is what lets unlabeled images (seen under photometric
perturbation) help a semi-supervised method.

Version 3 (2026-11-22). Version 1 was too hard for the CPU budget (all 800
labels: 44 mIoU in 400 iterations). In version 2 the ground was flat, and
objects were told apart mostly by outline. There FixMatch lost to
supervised: pixels it selected at τ = 0.95 were mostly the flat, confident
ground, so the strong views taught "faint texture = background", and grass,
triangles and rings drifted to background. Here the ground has a texture of
its own and covers less of the image (39 % of pixels instead of 47 %), and
the triangles' checkerboard is finer than the ground's blotches.
Measurements are in the README's demo section.

A scene is a pure function of (scene_seed, split, index): deterministic,
a few ms to render at 64x64, nothing cached on disk.

Two styles (`data.synthetic.style`), a second domain with the same classes:
"a" is the rendering above (bit-identical to version 3); "b" renders the
same layout (the same mask for the same scene) with another palette
(channels rotated, saturated, darker), a cobblestone ground instead of the
blotches, and a spotlight with a blue-green cast, darker mid-tones and more
noise instead of style A's illumination. Object and stuff textures keep
their kind (they are what tells the classes apart).
"""

from __future__ import annotations

import functools
from typing import Optional

import numpy as np

from ..errors import SemisegError
from .sample import Sample

CLASS_NAMES = ("background", "grass", "water", "disk", "box", "triangle", "ring")
PALETTE = ((0, 0, 0), (60, 160, 60), (40, 90, 200), (220, 60, 60), (230, 200, 40), (200, 80, 220), (40, 210, 210))
SPLIT_IDS = {"train": 0, "val": 1}

OBJECT_RADIUS = (0.18, 0.32)  # object size, as a fraction of the image side
OBJECTS_PER_SCENE = (1, 4)
RING_INNER = 0.45  # inner radius of a ring, as a fraction of its outer radius
MAX_HAZE = 0.15
TEXTURE = 0.15  # amplitude of the objects' interior textures
BACKGROUND_MOTTLE = 0.3  # peak-to-peak amplitude of the background's blotchy texture
STUFF_COVERAGE = (0.25, 0.45)  # fraction of the image each stuff region (grass, water) covers
STYLES = ("a", "b")  # data.synthetic.style
STYLE_B_SATURATION = 2.0  # style B's colours: saturation x2 around their grey ...
STYLE_B_DARKEN = 0.8  # ... then darkened
STYLE_B_CAST = (0.75, 0.95, 1.2)  # style B's blue-green colour cast (each channel jittered by +-8 %)
COBBLE_AREA = 100.0  # style B's ground: mean cell area in pixels (cells of ~10 px)
COBBLE_SHADE = 0.12  # brightness spread between cells
COBBLE_MORTAR = 1.2  # width of the mortar lines, in pixels (difference of the two nearest cell distances)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a random cells x cells grid, bilinearly upsampled."""
    grid = rng.random((cells + 1, cells + 1))
    coords = np.linspace(0, cells, size)
    i0 = np.minimum(coords.astype(int), cells - 1)
    frac = coords - i0
    rows = grid[i0] * (1 - frac)[:, None] + grid[i0 + 1] * frac[:, None]
    return rows[:, i0] * (1 - frac)[None, :] + rows[:, i0 + 1] * frac[None, :]


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.25, 0.85, size=3)


def _stuff_region(rng: np.random.Generator, size: int, coverage: float) -> np.ndarray:
    """A blob-shaped boolean region covering about `coverage` of the image."""
    field = _smooth_noise(rng, size, int(rng.integers(2, 5)))
    return field > np.quantile(field, 1.0 - coverage)


def _grass_texture(rng, size, base):
    """Fine isotropic noise around a colour: 'grass'."""
    noise = rng.normal(0.0, 0.09, size=(size, size, 1))
    return np.clip(base[None, None, :] + noise, 0, 1)


def _water_texture(rng, size, base, yy, xx):
    """Oriented sinusoidal stripes around a colour: 'water'."""
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(3.0, 7.0)
    phase = (np.cos(angle) * xx + np.sin(angle) * yy) * 2 * np.pi / period
    wave = 0.175 * np.sin(phase)[..., None]
    return np.clip(base[None, None, :] + wave, 0, 1)


def _object_mask(kind: str, rng, yy, xx, size, centre) -> np.ndarray:
    cy, cx = centre
    r = rng.uniform(*OBJECT_RADIUS) * size
    if kind == "disk":
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    if kind == "ring":
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        return (d2 <= r * r) & (d2 >= (RING_INNER * r) ** 2)
    angle = rng.uniform(0, np.pi)
    u = np.cos(angle) * (xx - cx) + np.sin(angle) * (yy - cy)
    v = -np.sin(angle) * (xx - cx) + np.cos(angle) * (yy - cy)
    if kind == "box":
        aspect = rng.uniform(0.5, 1.0)
        return (np.abs(u) <= r) & (np.abs(v) <= r * aspect)
    # triangle: intersection of three half-planes around the centre
    inside = np.ones_like(u, dtype=bool)
    for k in range(3):
        theta = 2 * np.pi * k / 3
        inside &= np.cos(theta) * u + np.sin(theta) * v <= 0.5 * r * 1.2
    return inside


def _object_appearance(kind: str, rng, colour, shape, yy, xx) -> np.ndarray:
    """Each object kind has its own interior texture on top of its shape (colour stays uninformative):
    disks are lit spheres with spots, boxes carry a grid, triangles a checkerboard, rings spokes."""
    size = shape.shape[0]
    speckle = rng.normal(0.0, 0.05, size=(size, size, 1))
    out = colour[None, None, :] * (1.0 + speckle)
    ys, xs = np.nonzero(shape)
    if not len(ys):
        return np.clip(out, 0, 1)
    cy, cx = ys.mean(), xs.mean()
    if kind == "disk":
        r = max(1.0, np.sqrt(len(ys) / np.pi))
        d = np.sqrt((yy - cy + 0.3 * r) ** 2 + (xx - cx + 0.3 * r) ** 2) / r
        out = out * np.clip(1.25 - 0.4 * d, 0.5, 1.3)[..., None]
        period = rng.uniform(4.0, 6.0)
        phase = rng.uniform(0, period, size=2)
        dy = (yy + phase[0]) % period - period / 2
        dx = (xx + phase[1]) % period - period / 2
        out = out + TEXTURE * np.where(dy ** 2 + dx ** 2 <= 1.5, 1.0, -0.3)[..., None]
    elif kind == "box":
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(5.0, 8.0)
        u = np.cos(angle) * (xx - cx) + np.sin(angle) * (yy - cy)
        v = -np.sin(angle) * (xx - cx) + np.cos(angle) * (yy - cy)
        lines = (np.abs((u % period) - period / 2) > period / 2 - 0.8) | (np.abs((v % period) - period / 2) > period / 2 - 0.8)
        out = out + TEXTURE * np.where(lines, -1.5, 0.3)[..., None]
    elif kind == "triangle":
        period, phase = rng.uniform(3.0, 5.0), rng.uniform(0, 10.0, size=2)  # squares finer than the ground's blotches
        checker = ((np.floor((yy + phase[0]) / period) + np.floor((xx + phase[1]) / period)) % 2) * 2 - 1
        out = out + TEXTURE * checker[..., None]
    elif kind == "ring":
        theta = np.arctan2(yy - cy, xx - cx)
        spokes = np.sin(int(rng.integers(8, 15)) * theta + rng.uniform(0, 2 * np.pi))
        out = out + TEXTURE * np.sign(spokes)[..., None]
    return np.clip(out, 0, 1)


# Context: where each object kind prefers to sit (probability of choosing each stuff region).
OBJECT_KINDS = ("disk", "box", "triangle", "ring")
CONTEXT = {"disk": "grass", "box": None, "triangle": None, "ring": "water"}


def _mottled_ground(rng, size) -> np.ndarray:
    """Style A's ground: a smooth colour gradient with a texture of its own (mottling, ~6 px blobs), so
    "flat" is not a background cue."""
    ground = _random_colour(rng)
    shade = _smooth_noise(rng, size, 2)[..., None]
    mottle = _smooth_noise(rng, size, int(rng.integers(8, 12)))[..., None] - 0.5
    return np.clip(ground[None, None, :] * (0.7 + 0.6 * shade) + BACKGROUND_MOTTLE * mottle, 0, 1)


def _style_b_colour(colour: np.ndarray) -> np.ndarray:
    """Style B's palette: a style-A colour with its channels rotated (r, g, b) -> (g, b, r), its saturation
    doubled around its grey level, and darkened; as in style A, every class draws from the same palette."""
    rotated = colour[[1, 2, 0]]
    grey = rotated.mean()
    return np.clip(STYLE_B_DARKEN * (grey + STYLE_B_SATURATION * (rotated - grey)), 0, 1)


def _cobblestones(rng, size) -> np.ndarray:
    """Style B's ground: irregular cells of ~10 px (a Voronoi tiling) with dark mortar lines between them and
    a brightness of their own, in one style-B colour (style A's ground is soft blotches)."""
    colour = _style_b_colour(_random_colour(rng))
    seeds = rng.uniform(0, size, size=(max(4, round(size * size / COBBLE_AREA)), 2))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dist = np.sqrt((yy[None] - seeds[:, 0, None, None]) ** 2 + (xx[None] - seeds[:, 1, None, None]) ** 2)
    nearest = np.partition(dist, 1, axis=0)
    cell = np.argmin(dist, axis=0)
    shade = 1.0 + rng.uniform(-COBBLE_SHADE, COBBLE_SHADE, size=len(seeds))[cell]
    mortar = np.where(nearest[1] - nearest[0] < COBBLE_MORTAR, 0.55, 1.0)
    return np.clip(colour[None, None, :] * (shade * mortar)[..., None], 0, 1)


def _lighting(rng, image, yy, xx) -> np.ndarray:
    """Style A's illumination: linear light gradient, colour cast, gamma, haze, sensor noise."""
    size = image.shape[0]
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * (xx - size / 2) + np.sin(angle) * (yy - size / 2)) / size
    light = rng.uniform(0.6, 1.2) * (1.0 + rng.uniform(0.0, 0.6) * ramp)
    cast = rng.uniform(0.75, 1.25, size=3)
    image = np.clip(image * light[..., None] * cast[None, None, :], 0, 1) ** rng.uniform(0.75, 1.33)
    haze = rng.uniform(0.0, MAX_HAZE)  # low contrast: blend towards a flat haze colour
    image = (1 - haze) * image + haze * rng.uniform(0.2, 0.8, size=3)[None, None, :]
    return np.clip(image + rng.normal(0, 0.03, size=image.shape), 0, 1)


def _spotlight(rng, image, yy, xx) -> np.ndarray:
    """Style B's illumination: a spotlight (bright around a random point, falling off to half towards the
    edges), a blue-green colour cast, darker mid-tones (gamma > 1) and more sensor noise (σ 0.04, not 0.03)."""
    size = image.shape[0]
    cy, cx = rng.uniform(0.2 * size, 0.8 * size, size=2)
    falloff = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (0.45 * size) ** 2))
    light = rng.uniform(0.5, 0.6) + rng.uniform(0.55, 0.75) * falloff
    cast = np.array(STYLE_B_CAST) * rng.uniform(0.92, 1.08, size=3)
    image = np.clip(image * light[..., None] * cast[None, None, :], 0, 1) ** rng.uniform(1.1, 1.4)
    return np.clip(image + rng.normal(0, 0.04, size=image.shape), 0, 1)


def render_scene(rng: np.random.Generator, size: int, style: str = "a",
                 style_rng: Optional[np.random.Generator] = None) -> tuple[np.ndarray, np.ndarray]:
    """One (image uint8 HxWx3, mask uint8 HxW) scene in `style` ("a" or "b").

    The layout (regions, objects, clutter, so the mask) is drawn from `rng` in the same order in every style.
    Style B paints it with its own palette (`_style_b_colour` of every drawn colour) and draws its ground
    texture and lighting from `style_rng` (style A's ground is still drawn from `rng`, and discarded, so that
    the layout draws that follow it are the same)."""
    paint = _style_b_colour if style == "b" else (lambda colour: colour)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    image = _mottled_ground(rng, size)
    if style == "b":
        image = _cobblestones(style_rng, size)
    mask = np.zeros((size, size), dtype=np.uint8)
    regions = {}
    for cls, name in ((1, "grass"), (2, "water")):
        if rng.random() < 0.85:
            region = _stuff_region(rng, size, rng.uniform(*STUFF_COVERAGE)) & (mask == 0)
            base = paint(_random_colour(rng))
            texture = _grass_texture(rng, size, base) if name == "grass" else _water_texture(rng, size, base, yy, xx)
            image[region] = texture[region]
            mask[region] = cls
            regions[name] = region
    for _ in range(int(rng.integers(OBJECTS_PER_SCENE[0], OBJECTS_PER_SCENE[1] + 1))):
        kind = OBJECT_KINDS[int(rng.integers(len(OBJECT_KINDS)))]
        cls = 3 + OBJECT_KINDS.index(kind)
        centre = rng.uniform(0, size, size=2)
        home = regions.get(CONTEXT[kind]) if CONTEXT[kind] else None
        if home is not None and home.any() and rng.random() < 0.8:
            # context: centre the object on a random pixel of its preferred region
            ys, xs = np.nonzero(home)
            j = int(rng.integers(len(ys)))
            centre = (ys[j], xs[j])
        shape = _object_mask(kind, rng, yy, xx, size, centre)
        colour = paint(_random_colour(rng))
        image[shape] = _object_appearance(kind, rng, colour, shape, yy, xx)[shape]
        mask[shape] = cls
    # clutter: thin strokes in random colours occluding everything (labelled background)
    for _ in range(int(rng.integers(0, 3))):
        angle = rng.uniform(0, np.pi)
        offset = rng.uniform(-size / 2, size / 2)
        dist = np.cos(angle) * (xx - size / 2) + np.sin(angle) * (yy - size / 2) - offset
        stroke = np.abs(dist) < rng.uniform(0.4, 1.0)
        image[stroke] = paint(_random_colour(rng))
        mask[stroke] = 0
    image = _spotlight(style_rng, image, yy, xx) if style == "b" else _lighting(rng, image, yy, xx)
    return (image * 255 + 0.5).astype(np.uint8), mask


@functools.lru_cache(maxsize=2048)  # a run's scenes (920 by default, up to 1,840 in two styles; 16 KB each)
def _rendered(scene_seed: int, split: str, scene: int, size: int,
              style: str = "a") -> tuple[np.ndarray, np.ndarray]:
    """A scene is a pure function of its key: render it once per process, then reuse it every epoch. The layout
    stream is seeded by (scene_seed, split, scene) in every style, so both styles of a scene share its mask."""
    key = [scene_seed, SPLIT_IDS[split], scene]
    look = np.random.default_rng(key + [STYLES.index(style)]) if style != "a" else None
    return render_scene(np.random.default_rng(key), size, style, look)


class SyntheticScenes:
    """A `Source` of rendered scenes; `labeled=False` hides the masks."""

    num_classes = len(CLASS_NAMES)

    def __init__(self, num_images: int, image_size: int = 64, scene_seed: int = 0, split: str = "train",
                 indices=None, labeled: bool = True, style: str = "a"):
        if style not in STYLES:
            raise SemisegError(f"unknown synthetic style {style!r}; set data.synthetic.style to one of "
                               f"{', '.join(STYLES)}")
        self.image_size = image_size
        self.scene_seed = scene_seed
        self.split = split
        self.style = style
        self.indices = list(range(num_images)) if indices is None else list(indices)
        self.labeled = labeled

    def __len__(self) -> int:
        return len(self.indices)

    def name(self, index: int) -> str:
        style = f"-{self.style}" if self.style != "a" else ""
        return f"synthetic{style}/{self.split}/{self.indices[index]:05d}"

    def load(self, index: int) -> Sample:
        image, mask = _rendered(self.scene_seed, self.split, self.indices[index], self.image_size, self.style)
        return Sample(image=image.copy(), mask=mask.copy() if self.labeled else None, name=self.name(index))

    def subset(self, indices, labeled: bool = True) -> "SyntheticScenes":
        return SyntheticScenes(0, self.image_size, self.scene_seed, self.split,
                               [self.indices[i] for i in indices], labeled, self.style)


def _register_preset():
    from ..registry import DATASETS
    from .presets import DatasetSplits, Preset
    from .splits import carve_labeled

    def scenes(syn, split: str, labeled: bool = True) -> SyntheticScenes:
        """The train or val scenes of a `synthetic` section (data.synthetic, or the target's)."""
        count = syn.num_train if split == "train" else syn.num_val
        return SyntheticScenes(count, syn.image_size, syn.scene_seed, split, labeled=labeled,
                               style=getattr(syn, "style", "a"))

    def origin(syn, split: str) -> str:
        return f"synthetic/{split} (style {getattr(syn, 'style', 'a')}, scene_seed={syn.scene_seed})"

    class SyntheticPreset(Preset):
        """Rendered scenes; `data.num_labeled` / `labeled_fraction` carve the labeled subset."""

        def build_labeled(self, data_cfg):
            train = scenes(data_cfg.synthetic, "train")
            if data_cfg.num_labeled is None and data_cfg.labeled_fraction is None:
                return train, origin(data_cfg.synthetic, "train")
            labeled, rest = carve_labeled(list(range(len(train))), data_cfg.num_labeled, data_cfg.labeled_fraction,
                                          data_cfg.split_seed)
            return train.subset(labeled), (f"{origin(data_cfg.synthetic, 'train')}: {len(labeled)} labeled, "
                                           f"split_seed={data_cfg.split_seed}; {len(rest)} not used")

        def build_unlabeled(self, data_cfg):
            return scenes(data_cfg.synthetic, "train", labeled=False), origin(data_cfg.synthetic, "train")

        def build_val(self, data_cfg):
            return scenes(data_cfg.synthetic, "val"), origin(data_cfg.synthetic, "val")

        def build(self, data_cfg) -> DatasetSplits:
            syn = data_cfg.synthetic
            train, val = scenes(syn, "train"), scenes(syn, "val")
            if data_cfg.num_labeled is None and data_cfg.labeled_fraction is None:
                return DatasetSplits(labeled=train, unlabeled=None, val=val, lists={"labeled": "synthetic/train"})
            labeled, unlabeled = carve_labeled(list(range(syn.num_train)), data_cfg.num_labeled,
                                               data_cfg.labeled_fraction, data_cfg.split_seed)
            return DatasetSplits(labeled=train.subset(labeled), unlabeled=train.subset(unlabeled, labeled=False),
                                 val=val, lists={"labeled": f"synthetic/train ({len(labeled)} labeled)"})

    DATASETS.register("synthetic")(SyntheticPreset(
        name="synthetic", class_names=CLASS_NAMES, palette=PALETTE, eval_mode="original", crop_size=64))


_register_preset()
