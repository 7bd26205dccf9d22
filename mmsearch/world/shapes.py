"""Procedural "shapes world" generator.

Every scene is a small RGB image with one (sometimes two) coloured shapes on a
plain, gradient or mildly noisy background, a structured record of its objects and
a list of natural-language captions.  Generation is fully deterministic: scene ``i``
of ``generate(seed, n)`` depends only on ``(seed, i)``, so ``generate(seed, 10)[:5]``
equals ``generate(seed, 5)`` and any other seed gives a fresh draw.

Example::

    from mmsearch.world.shapes import generate
    scenes = generate(seed=0, n=4)
    scenes[0].image          # PIL.Image (RGB, 64x64)
    scenes[0].objects        # [ShapeObject(shape='star', colour='blue', size='small', position='top', ...)]
    scenes[0].captions       # ['a small blue star at the top', 'a photo of a blue star', ...]
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "SHAPES",
    "COLOURS",
    "COLOUR_RGB",
    "SIZES",
    "POSITIONS",
    "RELATIONS",
    "ShapeObject",
    "Scene",
    "generate",
    "render_scene",
    "single_caption",
    "pair_caption",
    "single_captions",
    "pair_captions",
    "all_single_prompts",
]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "hexagon")

# Saturated, mutually distinct colours.  No white/black/grey: backgrounds are low
# saturation light or dark tints, so every object colour stays clearly visible.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 35),
    "green": (35, 170, 55),
    "blue": (35, 75, 225),
    "yellow": (245, 215, 25),
    "orange": (245, 130, 20),
    "purple": (135, 45, 185),
    "pink": (250, 115, 190),
    "cyan": (30, 205, 220),
}
COLOURS: tuple[str, ...] = tuple(COLOUR_RGB)

SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("center", "left", "right", "top", "bottom")
# Two-object relations; the first object is the caption's subject.
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")

_POS_XY: dict[str, tuple[float, float]] = {
    "center": (0.50, 0.50),
    "left": (0.27, 0.50),
    "right": (0.73, 0.50),
    "top": (0.50, 0.27),
    "bottom": (0.50, 0.73),
}
_POS_PHRASE: dict[str, str] = {
    "center": "in the center",
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
}
# Radius as a fraction of the image side.
_RADIUS = {("single", "small"): 0.14, ("single", "large"): 0.27,
           ("pair", "small"): 0.12, ("pair", "large"): 0.19}

BACKGROUNDS: tuple[str, ...] = ("light", "dark", "gradient", "noise")


@dataclass(frozen=True)
class ShapeObject:
    """Structured record of one drawn object (bbox in output pixel coordinates)."""

    shape: str
    colour: str
    size: str
    position: str
    bbox: tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def label(self) -> str:
        """``"red circle"``-style label."""
        return f"{self.colour} {self.shape}"


@dataclass
class Scene:
    image: Image.Image
    objects: list[ShapeObject]
    captions: list[str]
    background: str = "light"
    relation: str | None = None  # for two-object scenes: objects[0] RELATION objects[1]
    seed: int = 0
    index: int = 0
    meta: dict = field(default_factory=dict)

    @property
    def caption(self) -> str:
        """The canonical (first) caption."""
        return self.captions[0]


# --------------------------------------------------------------------------- captions

def single_caption(colour: str, shape: str) -> str:
    """The plain prompt used by tests and evaluation: ``"a red circle"``."""
    return f"a {colour} {shape}"


def pair_caption(colour1: str, shape1: str, relation: str, colour2: str, shape2: str) -> str:
    """``"a red circle left of a yellow triangle"``."""
    return f"a {colour1} {shape1} {relation} a {colour2} {shape2}"


def all_single_prompts() -> list[tuple[str, str, str]]:
    """All ``(colour, shape, "a colour shape")`` triples, in a fixed order."""
    return [(c, s, single_caption(c, s)) for c in COLOURS for s in SHAPES]


def single_captions(obj: ShapeObject) -> list[str]:
    """All caption variants of a single-object scene (canonical one first)."""
    c, s, z, p = obj.colour, obj.shape, obj.size, _POS_PHRASE[obj.position]
    return [
        f"a {z} {c} {s} {p}",
        f"a {c} {s}",
        f"a photo of a {c} {s}",
        f"{c} {s}",
        f"there is a {z} {c} {s} {p}",
        f"a {z} {c} {s}",
        f"a picture of a {c} {s} {p}",
        f"a drawing of a {z} {c} {s}",
        f"the {s} is {c}",
        f"a {s} in {c}",
        f"{z} {c} {s} {p}",
        f"an image with a {c} {s}",
    ]


_INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def pair_captions(a: ShapeObject, relation: str, b: ShapeObject) -> list[str]:
    """Caption variants for ``a RELATION b`` (canonical one first)."""
    inv = _INVERSE[relation]
    return [
        f"a {a.size} {a.colour} {a.shape} {relation} a {b.size} {b.colour} {b.shape}",
        pair_caption(a.colour, a.shape, relation, b.colour, b.shape),
        pair_caption(b.colour, b.shape, inv, a.colour, a.shape),
        f"a {a.colour} {a.shape} next to a {b.colour} {b.shape}",
        f"a {b.colour} {b.shape} next to a {a.colour} {a.shape}",
        f"a {a.colour} {a.shape} and a {b.colour} {b.shape}",
        f"a photo of a {a.colour} {a.shape} and a {b.colour} {b.shape}",
        f"two shapes: a {a.colour} {a.shape} and a {b.colour} {b.shape}",
        f"{a.colour} {a.shape} and {b.colour} {b.shape}",
        f"there is a {a.size} {a.colour} {a.shape} next to a {b.size} {b.colour} {b.shape}",
    ]


# --------------------------------------------------------------------------- drawing

def _polygon(shape: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    def pts(radii: list[float], start: float) -> list[tuple[float, float]]:
        n = len(radii)
        return [
            (cx + rr * math.cos(start + rot + 2 * math.pi * k / n),
             cy + rr * math.sin(start + rot + 2 * math.pi * k / n))
            for k, rr in enumerate(radii)
        ]

    up = -math.pi / 2
    if shape == "square":
        return pts([r * 1.0] * 4, math.pi / 4)  # axis aligned at rot=0
    if shape == "triangle":
        # Shift the centroid down a little so the visual centre sits at (cx, cy).
        return [(x, y + 0.12 * r) for x, y in pts([r * 1.12] * 3, up)]
    if shape == "star":
        return pts([r * 1.08, r * 0.45] * 5, up)
    if shape == "hexagon":
        return pts([r * 1.0] * 6, 0.0)
    if shape == "cross":
        a, t = r * 0.95, r * 0.34
        base = [(-t, -a), (t, -a), (t, -t), (a, -t), (a, t), (t, t),
                (t, a), (-t, a), (-t, t), (-a, t), (-a, -t), (-t, -t)]
        cr, sr = math.cos(rot), math.sin(rot)
        return [(cx + x * cr - y * sr, cy + x * sr + y * cr) for x, y in base]
    raise ValueError(f"unknown polygon shape {shape!r}")


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, rgb: tuple[int, int, int],
                cx: float, cy: float, r: float, rot: float) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=rgb)
    else:
        draw.polygon(_polygon(shape, cx, cy, r, rot), fill=rgb)


def _background(rng: random.Random, nprng: np.random.Generator, size: int,
                kind: str) -> np.ndarray:
    def tint(light: bool) -> np.ndarray:
        base = rng.uniform(205, 245) if light else rng.uniform(18, 60)
        jit = 14 if light else 10
        return np.array([base + rng.uniform(-jit, jit) for _ in range(3)], dtype=np.float32)

    if kind == "light":
        img = np.broadcast_to(tint(True), (size, size, 3)).copy()
    elif kind == "dark":
        img = np.broadcast_to(tint(False), (size, size, 3)).copy()
    elif kind == "gradient":
        light = rng.random() < 0.6
        c0, c1 = tint(light), tint(light)
        t = np.linspace(0.0, 1.0, size, dtype=np.float32)
        if rng.random() < 0.5:
            t = t[:, None, None] * np.ones((1, size, 1), np.float32)
        else:
            t = t[None, :, None] * np.ones((size, 1, 1), np.float32)
        img = c0 * (1 - t) + c1 * t
    elif kind == "noise":
        light = rng.random() < 0.6
        img = np.broadcast_to(tint(light), (size, size, 3)).copy()
        img += nprng.normal(0.0, rng.uniform(4.0, 10.0), size=(size, size, 1)).astype(np.float32)
    else:
        raise ValueError(f"unknown background {kind!r}")
    return np.clip(img, 0, 255)


def render_scene(objects: list[ShapeObject] | list[dict], size: int = 64, seed: int = 0,
                 background: str | None = None, relation: str | None = None) -> Scene:
    """Draw a scene for explicit objects (``shape``/``colour``/``size``/``position``).

    One object: ``position`` is one of :data:`POSITIONS`.  Two objects: give
    ``relation`` (one of :data:`RELATIONS`); positions are then derived from it.
    ``seed`` controls background, jitter and rotation.
    """
    specs = [o if isinstance(o, dict) else
             {"shape": o.shape, "colour": o.colour, "size": o.size, "position": o.position}
             for o in objects]
    if not 1 <= len(specs) <= 2:
        raise ValueError("a scene has one or two objects")
    rng = random.Random(f"render:{seed}")
    nprng = np.random.default_rng([7, seed & 0xFFFFFFFF])
    return _render(rng, nprng, specs, size, background, relation, seed, 0)


def _render(rng: random.Random, nprng: np.random.Generator, specs: list[dict], size: int,
            background: str | None, relation: str | None, seed: int, index: int) -> Scene:
    for s in specs:
        if s["shape"] not in SHAPES or s["colour"] not in COLOURS or s["size"] not in SIZES:
            raise ValueError(f"bad object spec {s!r}")
    kind = background or rng.choice(BACKGROUNDS)
    bg = _background(rng, nprng, size, kind)

    ss = 4 if size <= 128 else 2  # supersampling factor (anti-aliasing)
    S = size * ss
    canvas = Image.fromarray(bg.astype(np.uint8), "RGB").resize((S, S), Image.NEAREST)
    draw = ImageDraw.Draw(canvas)

    if len(specs) == 2:
        relation = relation or rng.choice(RELATIONS)
        if relation not in RELATIONS:
            raise ValueError(f"bad relation {relation!r}")
        horizontal = relation in ("left of", "right of")
        first_low = relation in ("left of", "above")  # subject has the smaller coordinate
        positions = (("left", "right") if horizontal else ("top", "bottom"))
        if not first_low:
            positions = positions[::-1]
        kinds = "pair"
    else:
        relation = None
        positions = (specs[0].get("position") or rng.choice(POSITIONS),)
        if positions[0] not in POSITIONS:
            raise ValueError(f"bad position {positions[0]!r}")
        kinds = "single"

    out: list[ShapeObject] = []
    for spec, pos in zip(specs, positions):
        r = _RADIUS[(kinds, spec["size"])] * size * rng.uniform(0.92, 1.08)
        fx, fy = _POS_XY[pos]
        if kinds == "pair":
            # Pairs sit a bit further apart and may drift along the other axis.
            fx = {"left": 0.25, "right": 0.75}.get(pos, fx)
            fy = {"top": 0.25, "bottom": 0.75}.get(pos, fy)
            if pos in ("left", "right"):
                fy += rng.uniform(-0.15, 0.15)
            else:
                fx += rng.uniform(-0.15, 0.15)
        cx = fx * size + rng.uniform(-0.04, 0.04) * size
        cy = fy * size + rng.uniform(-0.04, 0.04) * size
        margin = r * 1.1 + 1
        cx = min(max(cx, margin), size - margin)
        cy = min(max(cy, margin), size - margin)
        rot = math.radians(rng.uniform(-12, 12))
        _draw_shape(draw, spec["shape"], COLOUR_RGB[spec["colour"]], cx * ss, cy * ss, r * ss, rot)
        bbox = (int(cx - r * 1.1), int(cy - r * 1.1), int(math.ceil(cx + r * 1.1)), int(math.ceil(cy + r * 1.1)))
        out.append(ShapeObject(spec["shape"], spec["colour"], spec["size"], pos, bbox))

    image = canvas.resize((size, size), Image.LANCZOS) if ss > 1 else canvas
    if len(out) == 1:
        captions = single_captions(out[0])
    else:
        captions = pair_captions(out[0], relation, out[1])
    return Scene(image=image, objects=out, captions=captions, background=kind,
                 relation=relation, seed=seed, index=index)


def _random_specs(rng: random.Random, two: bool) -> list[dict]:
    first = {"shape": rng.choice(SHAPES), "colour": rng.choice(COLOURS), "size": rng.choice(SIZES)}
    if not two:
        return [first]
    while True:
        second = {"shape": rng.choice(SHAPES), "colour": rng.choice(COLOURS), "size": rng.choice(SIZES)}
        if (second["shape"], second["colour"]) != (first["shape"], first["colour"]):
            return [first, second]


def generate_one(seed: int, index: int, size: int = 64, two_object_rate: float = 0.25) -> Scene:
    """Scene ``index`` of the draw ``seed`` (what ``generate(seed, n)[index]`` returns)."""
    rng = random.Random(f"shapes:{seed}:{index}")
    nprng = np.random.default_rng([seed & 0xFFFFFFFF, index, 1])
    two = rng.random() < two_object_rate
    return _render(rng, nprng, _random_specs(rng, two), size, None, None, seed, index)


def generate(seed: int, n: int, size: int = 64, two_object_rate: float = 0.25) -> list[Scene]:
    """Generate ``n`` scenes deterministically from ``seed``.

    ``two_object_rate`` is the probability that a scene holds two objects
    (``0.0`` gives only single-object scenes).
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    if not 0.0 <= two_object_rate <= 1.0:
        raise ValueError("two_object_rate must be in [0, 1]")
    return [generate_one(seed, i, size, two_object_rate) for i in range(n)]
