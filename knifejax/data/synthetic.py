"""Synthetic knives: a procedural, deterministic, 192-class fine-grained dataset that runs offline.

Why it exists
-------------
The study this library reproduces classifies photos of 192 knife models (metric MAP@5). No
fine-grained photo set of that kind ships in any installable package, so examples, tests and
offline benchmarks use this stand-in instead: every image is drawn with numpy/PIL on demand from
``(class_id, sample_index, seed)``, nothing is downloaded and the same arguments give the same
bytes. It is meant to be learnable but not trivial: classes differ in small, local details (a
blade tip, two vs three rivets, a blade finish) under strong nuisance variation, and many class
pairs differ in exactly one attribute (see :func:`hard_pairs`).

How a class is defined
----------------------
A class is a combination of four discrete attributes. Three of them are crossed in full,
8 profiles x 6 handles x 4 finishes = 192 classes, and the fourth (fittings) is a fixed function
of profile and handle, ``fitting = (profile + handle) % 4``, so that every profile and every handle
appears with every fitting::

    idx  PROFILES (blade)        HANDLES (colour/material)  FINISHES (blade)   FITTINGS
    0    drop-point              wood                       satin              plain
    1    sheepsfoot              bone                       black-coated       guard
    2    tanto                   red polymer                damascus           2 rivets
    3    dagger (double edge)    black polymer              mirror             3 rivets
    4    clip-point              olive polymer
    5    wharncliffe             steel
    6    cleaver
    7    kukri (recurve)

    class_id = profile + 8 * handle + 48 * finish          (profile varies fastest)
    fitting  = (profile + handle) % 4

Hard pairs (classes that differ in exactly one of the four attributes):

* finish only: any two finishes, same profile and handle (288 pairs);
* profile only: profiles ``p`` and ``p + 4`` (drop-point/clip-point, sheepsfoot/wharncliffe,
  tanto/cleaver, dagger/kukri), same handle and finish (96 pairs);
* handle only: handles ``h`` and ``h + 4`` (wood/olive polymer, bone/steel), same profile and
  finish (64 pairs).

``num_classes < 192`` takes classes ``0 .. num_classes - 1`` of this enumeration. Because the
profile varies fastest, the first 8 classes already cover all 8 profiles (one handle, one finish,
with 4 profile-only hard pairs), the first 48 cover every profile x handle combination (with
profile-only and, from 33 classes on, handle-only hard pairs), and finishes enter in blocks of 48.
Every ``num_classes >= 5`` contains at least one hard pair.

What varies per sample (nuisances)
----------------------------------
pose (any rotation angle, mirror flip), scale (the knife spans ~0.65-1.15 of the image side, so
it is sometimes cropped by the border), translation, small shape jitter (handle length, blade and
handle thickness), handle/blade highlight position, a drop shadow, the background (random crops of
scikit-image's bundled CC0 photos ``brick``, ``grass`` and ``gravel``, tinted with random colours,
or plain or gradient backgrounds, sometimes with coloured distractor strokes), brightness,
contrast, illumination gradient, per-channel colour gains small enough to keep the handle colour
class, blur and sensor noise. Images are rendered at 2-3x supersampling and box-downsampled for
anti-aliasing; a 64-px image takes a few milliseconds.

scikit-image is only needed for the photo backgrounds; without it a procedural texture is used
instead (same API, different pixels).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

PROFILES: tuple[str, ...] = (
    "drop-point",
    "sheepsfoot",
    "tanto",
    "dagger",
    "clip-point",
    "wharncliffe",
    "cleaver",
    "kukri",
)
HANDLES: tuple[str, ...] = ("wood", "bone", "red polymer", "black polymer", "olive polymer", "steel")
FINISHES: tuple[str, ...] = ("satin", "black-coated", "damascus", "mirror")
FITTINGS: tuple[str, ...] = ("plain", "guard", "2 rivets", "3 rivets")
NUM_CLASSES: int = len(PROFILES) * len(HANDLES) * len(FINISHES)  # 192

ATTRIBUTES: tuple[str, ...] = ("profile", "handle", "finish", "fitting")


@dataclass(frozen=True)
class KnifeClass:
    """The attributes of one class, as indices into PROFILES, HANDLES, FINISHES, FITTINGS."""

    class_id: int
    profile: int
    handle: int
    finish: int
    fitting: int

    @property
    def name(self) -> str:
        return " / ".join(
            (PROFILES[self.profile], HANDLES[self.handle], FINISHES[self.finish], FITTINGS[self.fitting])
        )

    @property
    def attributes(self) -> tuple[int, int, int, int]:
        return (self.profile, self.handle, self.finish, self.fitting)


def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(f"num_classes must be an int in 1..{NUM_CLASSES}, got {num_classes!r}")
    if not 1 <= num_classes <= NUM_CLASSES:
        raise ValueError(f"num_classes must be in 1..{NUM_CLASSES}, got {num_classes}")
    return int(num_classes)


def _check_class_id(class_id: int) -> int:
    if isinstance(class_id, bool) or not isinstance(class_id, (int, np.integer)):
        raise ValueError(f"class_id must be an int in 0..{NUM_CLASSES - 1}, got {class_id!r}")
    if not 0 <= class_id < NUM_CLASSES:
        raise ValueError(f"class_id must be in 0..{NUM_CLASSES - 1}, got {class_id}")
    return int(class_id)


def knife_class(class_id: int) -> KnifeClass:
    """The attributes of class `class_id` (0..191)."""
    class_id = _check_class_id(class_id)
    n_p, n_h = len(PROFILES), len(HANDLES)
    profile = class_id % n_p
    handle = (class_id // n_p) % n_h
    finish = class_id // (n_p * n_h)
    fitting = (profile + handle) % len(FITTINGS)
    return KnifeClass(class_id, profile, handle, finish, fitting)


def class_attributes(num_classes: int = NUM_CLASSES) -> np.ndarray:
    """(num_classes, 4) int array of (profile, handle, finish, fitting) indices."""
    num_classes = _check_num_classes(num_classes)
    return np.array([knife_class(c).attributes for c in range(num_classes)], dtype=np.int64)


def class_names(num_classes: int = NUM_CLASSES) -> list[str]:
    """Readable names, e.g. 'clip-point / olive polymer / black-coated / 2 rivets'."""
    num_classes = _check_num_classes(num_classes)
    return [knife_class(c).name for c in range(num_classes)]


def hard_pairs(num_classes: int = NUM_CLASSES) -> list[tuple[int, int]]:
    """All pairs (a, b), a < b < num_classes, of classes that differ in exactly one attribute."""
    attrs = class_attributes(num_classes)
    differing = (attrs[:, None, :] != attrs[None, :, :]).sum(-1)
    a, b = np.nonzero(np.triu(differing == 1, k=1))
    return [(int(i), int(j)) for i, j in zip(a, b)]


# ----------------------------------------------------------------------------------------------
# Rendering. Knife frame: x along the knife (butt at about -0.5, tip at about +0.5), y across it,
# in units of the knife's total length; the edge side of the blade is at negative y.
# ----------------------------------------------------------------------------------------------


def _ramp(u: np.ndarray, start: float, end: float = 1.0) -> np.ndarray:
    return np.clip((u - start) / (end - start), 0.0, 1.0)


def _blade_outline(profile: int, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spine and edge of a blade as functions of u in [0, 1] (base -> tip), in units of blade height.

    The flat part of a blade spans v in [-0.5 (edge), +0.5 (spine)]; the tip is where they meet.
    """
    name = PROFILES[profile]
    half = np.full_like(u, 0.5)
    if name == "drop-point":
        tip = 0.02
        spine = 0.5 - (0.5 - tip) * _ramp(u, 0.55) ** 1.9
        edge = -0.5 + (0.5 + tip) * _ramp(u, 0.5) ** 2.4
    elif name == "clip-point":
        tip = 0.12
        w = _ramp(u, 0.5)
        spine = 0.5 - (0.5 - tip) * (1.0 - (1.0 - w) ** 1.8)  # concave clip: steep, then flat
        edge = -0.5 + (0.5 + tip) * _ramp(u, 0.5) ** 2.4
    elif name == "sheepsfoot":
        spine = 0.5 - 1.0 * _ramp(u, 0.55) ** 2.2
        edge = -half
    elif name == "wharncliffe":
        spine = 0.5 - 1.0 * _ramp(u, 0.2) ** 1.1
        edge = -half
    elif name == "tanto":
        tip = 0.3
        spine = 0.5 - (0.5 - tip) * _ramp(u, 0.88)
        edge = -0.5 + (0.5 + tip) * _ramp(u, 0.8)
    elif name == "dagger":
        width = 0.5 * (1.0 - u**1.6) ** 0.9
        spine, edge = width, -width
    elif name == "cleaver":
        spine = half
        edge = -0.5 + 0.06 * _ramp(u, 0.6) ** 2
    elif name == "kukri":
        centre = -1.4 * u**1.7  # the blade bends towards the edge
        width = 0.4 + 0.2 * np.sin(np.pi * np.clip(u / 0.8, 0.0, 1.0) * 0.6)
        width = width * np.sqrt(np.clip(1.0 - _ramp(u, 0.72) ** 2, 0.0, 1.0))
        spine, edge = centre + width, centre - width
        edge = edge + 0.3 * np.exp(-(((u - 0.06) / 0.025) ** 2))  # the notch near the handle
    else:  # pragma: no cover
        raise AssertionError(name)
    return spine, edge


# blade geometry per profile: (blade length, blade height, vertical offset of the blade's centre
# relative to the handle axis), in knife-length units
_BLADE_GEOMETRY = {
    "drop-point": (0.56, 0.15, 0.012),
    "clip-point": (0.58, 0.15, 0.012),
    "sheepsfoot": (0.54, 0.15, 0.012),
    "wharncliffe": (0.55, 0.15, 0.012),
    "tanto": (0.56, 0.145, 0.010),
    "dagger": (0.58, 0.15, 0.0),
    "cleaver": (0.55, 0.30, -0.085),
    "kukri": (0.58, 0.14, 0.02),
}

_HANDLE_RGB = {
    "wood": (0.52, 0.31, 0.15),
    "bone": (0.90, 0.86, 0.72),
    "red polymer": (0.78, 0.09, 0.08),
    "black polymer": (0.09, 0.09, 0.10),
    "olive polymer": (0.40, 0.42, 0.20),
    "steel": (0.62, 0.65, 0.69),
}


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


@functools.lru_cache(maxsize=8)
def _pixel_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    centres = (np.arange(n, dtype=np.float32) + 0.5) / n
    return np.meshgrid(centres, centres)  # (cols, rows), each (n, n), in [0, 1]


@functools.lru_cache(maxsize=1)
def _texture_photos() -> tuple[np.ndarray, ...]:
    """Grey CC0 photos bundled with scikit-image (a runtime dependency for exactly this)."""
    from skimage import data

    return tuple(np.ascontiguousarray(getattr(data, name)(), dtype=np.uint8) for name in ("brick", "grass", "gravel"))


def _random_colour(rng: np.random.Generator, lo: float = 0.1, hi: float = 0.9, sat: float = 0.5) -> np.ndarray:
    grey = rng.uniform(lo, hi)
    return np.clip(grey + rng.uniform(-sat, sat, 3) * min(grey, 1 - grey), 0.0, 1.0).astype(np.float32)


def _background(rng: np.random.Generator, n: int) -> np.ndarray:
    kind = rng.choice(3, p=[0.6, 0.15, 0.25])
    if kind == 0:  # tinted photo texture
        photos = _texture_photos()
        photo = photos[rng.integers(len(photos))]
        side = int(rng.integers(min(96, photo.shape[0]), photo.shape[0] + 1))
        top, left = rng.integers(0, photo.shape[0] - side + 1), rng.integers(0, photo.shape[1] - side + 1)
        crop = Image.fromarray(photo[top : top + side, left : left + side]).resize((n, n), Image.Resampling.BILINEAR)
        tex = np.asarray(crop, dtype=np.float32) / 255.0
        tex = np.rot90(tex, int(rng.integers(4)))
        dark, light = _random_colour(rng, 0.05, 0.45), _random_colour(rng, 0.45, 0.95)
        bg = dark + (light - dark) * tex[..., None]
    elif kind == 1:  # plain
        bg = np.broadcast_to(_random_colour(rng, 0.1, 0.95), (n, n, 3))
    else:  # linear gradient
        cols, rows = _pixel_grid(n)
        angle = rng.uniform(0, 2 * np.pi)
        t = _smoothstep((math.cos(angle) * (cols - 0.5) + math.sin(angle) * (rows - 0.5)) * 1.4 + 0.5)
        a, b = _random_colour(rng), _random_colour(rng)
        bg = a + (b - a) * t[..., None]
    bg = np.array(bg, dtype=np.float32)
    if rng.random() < 0.25:  # distractor strokes of random colours
        canvas = Image.fromarray((bg * 255).astype(np.uint8))
        draw = ImageDraw.Draw(canvas)
        for _ in range(int(rng.integers(1, 4))):
            x0, y0, x1, y1 = (rng.uniform(-0.2, 1.2, 4) * n).tolist()
            colour = tuple(int(c) for c in (_random_colour(rng, 0.1, 0.9, 0.9) * 255))
            draw.line((x0, y0, x1, y1), fill=colour, width=max(1, int(rng.uniform(0.01, 0.05) * n)))
        bg = np.asarray(canvas, dtype=np.float32) / 255.0
    return bg


def _handle_colour(handle: int, x, y, t, rng: np.random.Generator) -> np.ndarray:
    """Colour of the handle material at knife-frame points (x, y); t in [0, 1] across the handle."""
    name = HANDLES[handle]
    base = np.asarray(_HANDLE_RGB[name], np.float32) * np.float32(rng.uniform(0.9, 1.1))
    light = rng.uniform(0.25, 0.75)  # highlight position across the handle
    shade = 0.72 + 0.4 * np.exp(-(((t - light) / 0.35) ** 2))
    gloss = 0.0
    if name == "wood":
        phase = rng.uniform(0, 2 * np.pi)
        grain = np.sin(2 * np.pi * (y * rng.uniform(40, 60) + 0.7 * np.sin(2 * np.pi * x * rng.uniform(2, 4) + phase)))
        shade = shade * (0.86 + 0.18 * grain)
    elif name == "bone":
        p1, p2 = rng.uniform(0, 2 * np.pi, 2)
        shade = shade * (0.94 + 0.06 * np.sin(x * 37 + p1) * np.sin(y * 61 + p2))
    elif name == "olive polymer":
        shade = shade * (0.93 + 0.07 * np.sin(2 * np.pi * y * 70))
    elif name in ("black polymer", "red polymer"):
        gloss = 0.25 * np.exp(-(((t - light) / 0.09) ** 2))
    elif name == "steel":
        brushed = np.sin(2 * np.pi * y * 140 + 3 * np.sin(x * 20))
        shade = shade * (0.95 + 0.05 * brushed)
        gloss = 0.25 * np.exp(-(((t - light) / 0.12) ** 2))
    return base * shade[..., None] + np.asarray(gloss, np.float32)[..., None]


def _blade_grey(finish: int, u, v, x, y, bevel, rng: np.random.Generator) -> np.ndarray:
    """Grey level of the blade finish; `bevel` marks the sharpened (ground) strips."""
    name = FINISHES[finish]
    if name == "satin":
        flat = 0.66 + 0.03 * np.sin(2 * np.pi * y * 180)
        ground = 0.80
    elif name == "black-coated":
        flat = np.full_like(u, 0.10)
        ground = 0.78
    elif name == "damascus":
        period = rng.uniform(0.036, 0.044)
        p1, p2 = rng.uniform(0, 2 * np.pi, 2)
        wave = x + 0.012 * np.sin(2 * np.pi * y / 0.1 + p1) + 0.008 * np.sin(2 * np.pi * x / 0.13 + p2)
        bands = np.sin(2 * np.pi * wave / period)
        flat = 0.48 + 0.34 * np.tanh(2.5 * bands)
        ground = flat * 0.55 + 0.4
    elif name == "mirror":
        horizon = rng.uniform(-0.25, 0.25) + rng.uniform(-0.3, 0.3) * (u - 0.5)
        flat = 0.16 + 0.82 * _smoothstep((v - horizon) / 0.12 + 0.5)
        ground = 0.98 - 0.75 * _smoothstep((v - horizon) / 0.12 + 0.5)
    else:  # pragma: no cover
        raise AssertionError(name)
    return np.where(bevel, ground, flat)


def render_knife(class_id: int, sample_index: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """One (size, size, 3) uint8 image of class `class_id`; a deterministic function of its arguments."""
    class_id = _check_class_id(class_id)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"size must be an int >= 16, got {size!r}")
    if sample_index < 0 or seed < 0:
        raise ValueError(f"sample_index and seed must be >= 0, got {sample_index} and {seed}")
    size = int(size)
    kc = knife_class(class_id)
    rng = np.random.default_rng([int(seed), class_id, int(sample_index)])
    factor = 3 if size <= 128 else 2
    n = size * factor
    bg = _background(rng, n)

    # pose: image point = centre + length * R(angle) @ (x, flip * y), in units of the image side
    angle = rng.uniform(0, 2 * np.pi)
    flip = 1.0 if rng.random() < 0.5 else -1.0
    length = rng.uniform(0.65, 1.15)
    cx, cy = (0.5 + rng.uniform(-0.15, 0.15, 2)).tolist()
    ca, sa = math.cos(angle), math.sin(angle)

    # shape, with small per-sample jitter
    profile = PROFILES[kc.profile]
    blade_len, blade_h, blade_dy = _BLADE_GEOMETRY[profile]
    blade_len *= rng.uniform(0.95, 1.05)
    blade_h *= rng.uniform(0.92, 1.08)
    handle_len = rng.uniform(0.40, 0.46)
    handle_h = 0.105 * rng.uniform(0.92, 1.08)
    total = handle_len + blade_len
    x0 = -total / 2  # butt
    xb = x0 + handle_len  # blade base

    # work only on the pixels of the knife's bounding box
    reach = max(handle_h / 2, blade_h * 0.5 + abs(blade_dy)) + 0.035  # guard half-height
    y_lo = min(-reach, blade_dy - blade_h * (2.2 if profile == "kukri" else 0.6)) - 0.01
    y_hi = max(reach, blade_dy + blade_h * 0.6) + 0.01
    corners = np.array([(x0 - 0.01, y_lo), (x0 - 0.01, y_hi), (x0 + total + 0.01, y_lo), (x0 + total + 0.01, y_hi)])
    px = (cx + length * (ca * corners[:, 0] - sa * flip * corners[:, 1])) * n
    py = (cy + length * (sa * corners[:, 0] + ca * flip * corners[:, 1])) * n
    c0, c1 = max(0, int(px.min())), min(n, int(math.ceil(px.max())) + 1)
    r0, r1 = max(0, int(py.min())), min(n, int(math.ceil(py.max())) + 1)
    if c1 <= c0 or r1 <= r0:  # pragma: no cover - the centre is always inside the image
        c0, c1, r0, r1 = 0, n, 0, n
    cols, rows = _pixel_grid(n)
    dx = (cols[r0:r1, c0:c1] - np.float32(cx)) / np.float32(length)
    dy = (rows[r0:r1, c0:c1] - np.float32(cy)) / np.float32(length)
    x = np.float32(ca) * dx + np.float32(sa) * dy
    y = np.float32(flip) * (np.float32(-sa) * dx + np.float32(ca) * dy)

    # handle: rounded butt, finger groove in front
    hx = np.clip((x - x0) / handle_len, 0.0, 1.0)
    swell = np.sin(np.float32(np.pi) * hx)
    groove = 0.22 * np.exp(-(((hx - 0.86) / 0.07) ** 2))
    top = handle_h / 2 * (1.0 + 0.08 * swell)
    bottom = -handle_h / 2 * (1.0 + 0.12 * swell - groove)
    r_butt = handle_h / 2
    butt = np.sqrt(np.clip(1.0 - (np.clip(x0 + r_butt - x, 0, None) / r_butt) ** 2, 0.0, 1.0))
    handle_mask = (x >= x0) & (x <= xb) & (y <= top * butt) & (y >= bottom * butt)
    t_handle = np.clip((y - bottom) / (top - bottom), 0.0, 1.0)

    # blade
    u = (x - xb) / blade_len
    v = (y - blade_dy) / blade_h
    spine, edge = _blade_outline(kc.profile, np.clip(u, 0.0, 1.0))
    blade_mask = (u >= 0) & (u <= 1) & (v <= spine) & (v >= edge)
    bevel_w = 0.2
    bevel = v - edge < bevel_w
    if profile == "dagger":
        bevel = bevel | (spine - v < bevel_w)
    elif profile == "clip-point":
        bevel = bevel | ((spine - v < bevel_w * 0.8) & (u > 0.5))  # false edge on the clip
    elif profile == "tanto":
        bevel = (bevel & (u < 0.8)) | ((u >= 0.8) & (v < 0.1))
    elif profile == "cleaver":  # hanging hole
        blade_mask &= ((u - 0.86) * blade_len) ** 2 + ((v - 0.3) * blade_h) ** 2 > 0.022**2

    # drop shadow under the whole knife
    knife_mask = np.zeros((n, n), np.uint8)
    knife_mask[r0:r1, c0:c1] = (handle_mask | blade_mask) * np.uint8(255)
    offset = tuple((rng.uniform(-0.03, 0.03, 2) * n).astype(int).tolist())
    shadow = Image.fromarray(np.roll(knife_mask, offset, axis=(0, 1))).filter(ImageFilter.GaussianBlur(0.012 * n))
    img = bg * (1.0 - np.float32(rng.uniform(0.2, 0.5)) / 255 * np.asarray(shadow, np.float32))[..., None]

    # handle, blade, fittings, painted into the bounding box
    box = img[r0:r1, c0:c1]
    box = np.where(handle_mask[..., None], _handle_colour(kc.handle, x, y, t_handle, rng), box)
    light = 0.85 + 0.3 * (math.cos(angle * 1.7) * u + 0.4 * v) * rng.uniform(0.3, 1.0)
    grey = _blade_grey(kc.finish, u, v, x, y, bevel, rng) * light
    if profile == "dagger":  # central ridge
        grey = np.where(np.abs(v) < 0.03 * (1 - u), grey * 0.6, grey)
    blade_rgb = grey[..., None] * np.asarray([1.0, 1.0, 1.04], np.float32)
    box = np.where(blade_mask[..., None], blade_rgb, box)

    fitting = FITTINGS[kc.fitting]
    steel = np.asarray([0.72, 0.72, 0.75], np.float32)
    if fitting == "guard":
        guard = (np.abs(x - xb + 0.01) < 0.013) & (np.abs(y - blade_dy / 2) < reach)
        g_shade = 0.75 + 0.35 * _smoothstep((x - xb + 0.023) / 0.026)
        box = np.where(guard[..., None], steel * g_shade[..., None], box)
    elif fitting in ("2 rivets", "3 rivets"):
        count = int(fitting[0])
        radius = 0.021
        for k in range(count):
            xr = x0 + handle_len * (0.2 + 0.58 * k / (count - 1))
            d2 = (x - xr) ** 2 + y**2
            box = np.where((d2 < radius**2)[..., None], np.float32(0.25), box)
            box = np.where((d2 < (0.62 * radius) ** 2)[..., None], steel * 1.15, box)
    img[r0:r1, c0:c1] = box

    # anti-aliasing: box downsample
    img = img.reshape(size, factor, size, factor, 3).mean(axis=(1, 3))

    # blur
    if rng.random() < 0.5:
        pil = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
        pil = pil.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.1) * size / 64))
        img = np.asarray(pil, np.float32) / 255.0

    # photometric nuisances
    mean = img.mean()
    img = (img - mean) * rng.uniform(0.75, 1.2) + mean  # contrast
    img = img * (rng.uniform(0.7, 1.2) * (1.0 + rng.normal(0.0, 0.04, 3))).astype(np.float32)  # brightness, colour
    c, r = _pixel_grid(size)
    g_angle = rng.uniform(0, 2 * np.pi)
    illumination = 1.0 + rng.uniform(0.0, 0.4) * (math.cos(g_angle) * (c - 0.5) + math.sin(g_angle) * (r - 0.5))
    img = img * illumination[..., None]
    img = img + rng.normal(0.0, rng.uniform(0.0, 0.03), img.shape).astype(np.float32)
    return (np.clip(img, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


_SPLIT_OFFSETS = {"train": 0, "val": 1, "test": 2}
_DEFAULT_IMAGES_PER_CLASS = {"train": 40, "val": 10, "test": 10}


class SyntheticKnives:
    """Random-access source of synthetic knife images: ``ds[i] -> {"image": uint8 HWC, "label": int}``.

    Item ``i`` is class ``i % num_classes``, sample ``i // num_classes`` of that class, so any prefix
    of the source is class-balanced. Sample ``j`` of a split renders with sample index
    ``3 * j + {"train": 0, "val": 1, "test": 2}[split]``: the splits never share an image, whatever
    their sizes. `images_per_class` defaults to 40 for "train" and 10 for "val" and "test".
    Works as a grain ``RandomAccessDataSource`` (``__len__`` and ``__getitem__``).
    """

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        images_per_class: int | None = None,
        size: int = 64,
        seed: int = 0,
        split: str = "train",
    ):
        self.num_classes = _check_num_classes(num_classes)
        if split not in _SPLIT_OFFSETS:
            raise ValueError(f"split must be one of {sorted(_SPLIT_OFFSETS)}, got {split!r}")
        if images_per_class is None:
            images_per_class = _DEFAULT_IMAGES_PER_CLASS[split]
        ipc = images_per_class
        if isinstance(ipc, bool) or not isinstance(ipc, (int, np.integer)) or ipc < 1:
            raise ValueError(f"images_per_class must be an int >= 1, got {images_per_class!r}")
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 16:
            raise ValueError(f"size must be an int >= 16, got {size!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        self.images_per_class = int(images_per_class)
        self.size = int(size)
        self.seed = int(seed)
        self.split = split
        self.class_names = class_names(self.num_classes)

    def __len__(self) -> int:
        return self.num_classes * self.images_per_class

    @property
    def labels(self) -> np.ndarray:
        """The label of every item, in order, without rendering."""
        return np.tile(np.arange(self.num_classes, dtype=np.int64), self.images_per_class)

    @property
    def fingerprint(self) -> str:
        """What determines every pixel and label (the decode-once cache is keyed by it)."""
        return repr(self)

    def sample_index(self, index: int) -> int:
        """The `sample_index` argument of render_knife for item `index`."""
        return 3 * (index // self.num_classes) + _SPLIT_OFFSETS[self.split]

    def __getitem__(self, index: int) -> dict:
        n = len(self)
        index = int(index)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {n} items")
        label = index % self.num_classes
        image = render_knife(label, self.sample_index(index), size=self.size, seed=self.seed)
        return {"image": image, "label": label}

    def __repr__(self) -> str:
        return (
            f"SyntheticKnives(num_classes={self.num_classes}, images_per_class={self.images_per_class}, "
            f"size={self.size}, seed={self.seed}, split={self.split!r})"
        )
