"""Part 5's data: captioned images of coloured shapes, drawn by a program, and 2-D toy distributions.

A *scene* holds one or two objects. Each object has a shape (circle, square, triangle), a colour (red, green, blue,
yellow), a size (small or large, with a continuous diameter) and a position (a continuous centre, in pixels). A
single object sits in one quadrant and its caption names all four attributes ("a large red circle in the top
left"); a pair of objects of different colours sits side by side or one above the other, and its caption names the
relation ("a red circle left of a blue square", or the same picture as "a blue square right of a red circle").

Some colour-shape combinations (``HELD_OUT``) never occur in the training split, so a text-conditioned model can be
tested on combinations it never saw. Everything is generated from a seed: no file, no download.

Images are float tensors ``(N, 3, H, W)`` in ``[0, 1]`` (``to_model``/``from_model`` map to and from the models'
``[-1, 1]``). Objects are rendered with 4x4 supersampling, so edges are antialiased and positions are sub-pixel.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, fields

import torch

SHAPES = ("circle", "square", "triangle")
COLOUR_NAMES = ("red", "green", "blue", "yellow")
COLOURS = torch.tensor([  # RGB in [0, 1], on a black background
    [0.90, 0.12, 0.12],
    [0.15, 0.80, 0.20],
    [0.20, 0.35, 1.00],
    [0.95, 0.85, 0.10],
])
SIZES = ("small", "large")
QUADRANTS = ("top left", "top right", "bottom left", "bottom right")
RELATIONS = ("left of", "above")  # a pair is stored as (first, relation, second); captions may swap the order
# Colour-shape combinations never shown in the training split (each shape once, three of the four colours once).
HELD_OUT = (("red", "triangle"), ("green", "circle"), ("blue", "square"))
SPLITS = ("train", "test", "held_out", "all")
KINDS = ("single", "pair", "mixed")
BASE_RESOLUTION = 16  # positions and sizes below are in pixels of a 16 x 16 image, scaled for other resolutions
SMALL_DIAMETER = (4.5, 5.5)  # uniform ranges of the diameter (circle), side (square), base = height (triangle)
LARGE_DIAMETER = (6.5, 7.5)
SIZE_THRESHOLD = 6.0  # the diameter that separates small from large (the judge uses it too)


def held_out_mask(shape: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """True where (colour, shape) is a held-out combination (-1 entries are never held out)."""
    out = torch.zeros_like(shape, dtype=torch.bool)
    for c, s in HELD_OUT:
        out |= (colour == COLOUR_NAMES.index(c)) & (shape == SHAPES.index(s))
    return out


@dataclass
class Scenes:
    """A batch of scenes; objects beyond ``n_objects`` hold -1 (integers) or NaN (floats) in slot 1."""

    n_objects: torch.Tensor  # (N,) 1 or 2
    shape: torch.Tensor  # (N, 2) index into SHAPES
    colour: torch.Tensor  # (N, 2) index into COLOUR_NAMES
    size: torch.Tensor  # (N, 2) 0 small, 1 large
    diameter: torch.Tensor  # (N, 2) pixels, at BASE_RESOLUTION
    cx: torch.Tensor  # (N, 2) centre x (column), pixels at BASE_RESOLUTION
    cy: torch.Tensor  # (N, 2) centre y (row, downwards)
    relation: torch.Tensor  # (N,) -1 single, 0 "left of", 1 "above" (object 0 relative to object 1)
    swap: torch.Tensor  # (N,) bool: the caption names object 1 first ("B right of A" instead of "A left of B")

    def __len__(self) -> int:
        return int(self.n_objects.shape[0])

    def __getitem__(self, index) -> Scenes:
        if isinstance(index, int):
            index = slice(index, index + 1)
        return Scenes(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def cat(parts: list[Scenes]) -> Scenes:
        return Scenes(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(Scenes)})

    @property
    def quadrant(self) -> torch.Tensor:
        """(N,) index into QUADRANTS of object 0's centre (meaningful for single objects)."""
        right = (self.cx[:, 0] >= BASE_RESOLUTION / 2).long()
        bottom = (self.cy[:, 0] >= BASE_RESOLUTION / 2).long()
        return 2 * bottom + right

    @property
    def has_held_out(self) -> torch.Tensor:
        """(N,) True where some object of the scene is a held-out colour-shape combination."""
        return held_out_mask(self.shape, self.colour).any(dim=1)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def _draw_objects(n: int, generator: torch.Generator, distinct_colours: bool) -> tuple[torch.Tensor, torch.Tensor]:
    shape = torch.randint(0, len(SHAPES), (n, 2), generator=generator)
    colour = torch.randint(0, len(COLOUR_NAMES), (n, 2), generator=generator)
    if distinct_colours:  # object 1 takes one of the three other colours
        colour[:, 1] = (colour[:, 0] + torch.randint(1, len(COLOUR_NAMES), (n,), generator=generator)) % len(
            COLOUR_NAMES)
    return shape, colour


def _allowed(shape: torch.Tensor, colour: torch.Tensor, n_obj: torch.Tensor, split: str) -> torch.Tensor:
    present = torch.arange(2)[None, :] < n_obj[:, None]  # (N, 2)
    held = held_out_mask(shape, colour) & present
    if split in ("train", "test"):
        return ~held.any(dim=1)
    if split == "held_out":
        return held.any(dim=1)
    return torch.ones(shape.shape[0], dtype=torch.bool)


def sample_scenes(n: int, kind: str = "single", split: str = "train", seed: int = 0,
                  generator: torch.Generator | None = None) -> Scenes:
    """``n`` random scenes of a kind ('single', 'pair', 'mixed': half and half) from a split.

    'train' and 'test' exclude the held-out colour-shape combinations (they differ only by their seeds, so use
    different seeds for them); 'held_out' scenes contain at least one held-out combination; 'all' has no rule.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: choose one of {', '.join(KINDS)}")
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: choose one of {', '.join(SPLITS)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r}: the number of scenes must be a positive integer")
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    kept: list[Scenes] = []
    count = 0
    while count < n:
        m = 2 * (n - count) + 16
        if kind == "single":
            n_obj = torch.ones(m, dtype=torch.long)
        elif kind == "pair":
            n_obj = torch.full((m,), 2, dtype=torch.long)
        else:
            n_obj = 1 + (torch.rand(m, generator=g) < 0.5).long()
        shape, colour = _draw_objects(m, g, distinct_colours=True)
        scenes = _place(n_obj, shape, colour, g)
        ok = _allowed(shape, colour, n_obj, split)
        idx = torch.nonzero(ok).squeeze(1)[: n - count]
        kept.append(scenes[idx])
        count += len(idx)
    return Scenes.cat(kept)


def _place(n_obj: torch.Tensor, shape: torch.Tensor, colour: torch.Tensor, g: torch.Generator) -> Scenes:
    """Sizes, positions and relations for objects already drawn (at BASE_RESOLUTION)."""
    m = n_obj.shape[0]
    single = n_obj == 1
    size = torch.randint(0, 2, (m, 2), generator=g)
    size[~single] = 0  # pairs are small, so that two fit side by side
    small = torch.stack([_uniform(m, *SMALL_DIAMETER, g), _uniform(m, *SMALL_DIAMETER, g)], 1)
    large = torch.stack([_uniform(m, *LARGE_DIAMETER, g), _uniform(m, *LARGE_DIAMETER, g)], 1)
    diameter = torch.where(size == 1, large, small)
    quadrant = torch.randint(0, 4, (m,), generator=g)
    jitter = torch.stack([_uniform(m, -1, 1, g) for _ in range(4)], 1)  # (m, 4)
    relation = torch.randint(0, 2, (m,), generator=g)
    swap = torch.rand(m, generator=g) < 0.5
    # single: quadrant centres 4 or 12, +-1
    sx = 4.0 + 8.0 * (quadrant % 2).double() + jitter[:, 0]
    sy = 4.0 + 8.0 * (quadrant // 2).double() + jitter[:, 1]
    # pair: object 0 left of (or above) object 1; along the relation's axis 4 and 12 (+-1), across it 8 +-2
    along = torch.stack([4.0 + jitter[:, 0], 12.0 + jitter[:, 1]], 1)
    across = 8.0 + 2.0 * torch.stack([jitter[:, 2], jitter[:, 3]], 1)
    horizontal = (relation == 0)[:, None]
    px = torch.where(horizontal, along, across)
    py = torch.where(horizontal, across, along)
    cx = torch.where(single[:, None], torch.stack([sx, torch.full_like(sx, math.nan)], 1), px)
    cy = torch.where(single[:, None], torch.stack([sy, torch.full_like(sy, math.nan)], 1), py)
    half = diameter / 2 + 0.25  # keep every object inside the frame
    cx = torch.minimum(torch.maximum(cx, half), BASE_RESOLUTION - half)
    cy = torch.minimum(torch.maximum(cy, half), BASE_RESOLUTION - half)
    second = ~single
    shape = torch.where(second[:, None] | (torch.arange(2) == 0), shape, -1)
    colour = torch.where(second[:, None] | (torch.arange(2) == 0), colour, -1)
    size = torch.where(second[:, None] | (torch.arange(2) == 0), size, -1)
    diameter = torch.where(second[:, None] | (torch.arange(2) == 0), diameter, math.nan)
    return Scenes(n_objects=n_obj, shape=shape, colour=colour, size=size, diameter=diameter, cx=cx, cy=cy,
                  relation=torch.where(single, -1, relation), swap=swap & second)


# ---- rendering -------------------------------------------------------------------------------------------------


def coverage(kind: torch.Tensor, diameter: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, resolution: int,
             supersample: int = 4) -> torch.Tensor:
    """(M, H, W) fraction of each pixel that an object covers, for M objects (kind: index into SHAPES).

    Sizes and centres are in pixels of the BASE_RESOLUTION grid and scaled to ``resolution``. Each pixel is sampled
    at ``supersample``^2 points; circle: |p - c| <= d/2; square: side d; triangle: apex up, base d, height d.
    """
    scale = resolution / BASE_RESOLUTION
    s = supersample
    grid = (torch.arange(resolution * s, dtype=torch.float64) + 0.5) / s  # sample points, in output pixels
    y = grid[None, :, None]
    x = grid[None, None, :]
    d = (diameter * scale)[:, None, None]
    ux = x - (cx * scale)[:, None, None]
    uy = y - (cy * scale)[:, None, None]
    circle = ux**2 + uy**2 <= (d / 2) ** 2
    square = (ux.abs() <= d / 2) & (uy.abs() <= d / 2)
    depth = uy + d / 2  # distance below the apex
    triangle = (depth >= 0) & (depth <= d) & (ux.abs() <= depth / 2)
    k = kind[:, None, None]
    inside = torch.where(k == 0, circle, torch.where(k == 1, square, triangle))
    m = kind.shape[0]
    return inside.double().view(m, resolution, s, resolution, s).mean(dim=(2, 4))


def render(scenes: Scenes, resolution: int = BASE_RESOLUTION, supersample: int = 4) -> torch.Tensor:
    """(N, 3, H, W) float32 images in [0, 1]: the scenes' objects painted on black, antialiased."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 8:
        raise ValueError(f"resolution={resolution!r}: must be an integer >= 8")
    n = len(scenes)
    images = torch.zeros(n, 3, resolution, resolution, dtype=torch.float64)
    for slot in range(2):
        present = scenes.shape[:, slot] >= 0
        idx = torch.nonzero(present).squeeze(1)
        if len(idx) == 0:
            continue
        a = coverage(scenes.shape[idx, slot], scenes.diameter[idx, slot], scenes.cx[idx, slot],
                     scenes.cy[idx, slot], resolution, supersample)[:, None]  # (M, 1, H, W)
        rgb = COLOURS.double()[scenes.colour[idx, slot]][:, :, None, None]  # (M, 3, 1, 1)
        images[idx] = images[idx] * (1 - a) + rgb * a
    return images.float()


def to_model(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> the models' [-1, 1]."""
    return images * 2 - 1


def from_model(x: torch.Tensor) -> torch.Tensor:
    """The models' [-1, 1] -> [0, 1] images, clamped (a sample can overshoot)."""
    return ((x + 1) / 2).clamp(0, 1)


def check_images(images, resolution: int | None = None, name: str = "images") -> torch.Tensor:
    """Return ``images`` as float32 (N, 3, H, W) in [0, 1], or raise a ValueError that says what is wrong."""
    if not torch.is_tensor(images):
        raise ValueError(f"{name} must be a torch tensor of shape (N, 3, H, W), got {type(images).__name__}")
    if images.dim() == 3:
        raise ValueError(f"{name} has shape {tuple(images.shape)}: add the batch dimension, images[None]")
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(f"{name} has shape {tuple(images.shape)}: expected (N, 3, H, W) RGB squares")
    if resolution is not None and images.shape[-1] != resolution:
        raise ValueError(f"{name} are {images.shape[-1]}x{images.shape[-1]}, expected {resolution}x{resolution}")
    if not images.is_floating_point():
        raise ValueError(f"{name} have dtype {images.dtype}: expected floats in [0, 1] (divide uint8 by 255)")
    images = images.detach().float().cpu()
    if not torch.isfinite(images).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    low, high = images.min().item(), images.max().item()
    if low < -1e-6 or high > 1 + 1e-6:
        raise ValueError(f"{name} range from {low:.3f} to {high:.3f}: expected [0, 1] (a model's [-1, 1] output "
                         "goes through from_model first)")
    return images.clamp(0, 1)


# ---- captions --------------------------------------------------------------------------------------------------


def caption(scenes: Scenes, index: int) -> str:
    """The caption of one scene."""
    i = index
    if int(scenes.n_objects[i]) == 1:
        return (f"a {SIZES[int(scenes.size[i, 0])]} {COLOUR_NAMES[int(scenes.colour[i, 0])]} "
                f"{SHAPES[int(scenes.shape[i, 0])]} in the {QUADRANTS[int(scenes.quadrant[i])]}")
    a = f"{COLOUR_NAMES[int(scenes.colour[i, 0])]} {SHAPES[int(scenes.shape[i, 0])]}"
    b = f"{COLOUR_NAMES[int(scenes.colour[i, 1])]} {SHAPES[int(scenes.shape[i, 1])]}"
    rel = int(scenes.relation[i])
    if bool(scenes.swap[i]):
        return f"a {b} {'right of' if rel == 0 else 'below'} a {a}"
    return f"a {a} {'left of' if rel == 0 else 'above'} a {b}"


def captions(scenes: Scenes) -> list[str]:
    """The caption of every scene."""
    return [caption(scenes, i) for i in range(len(scenes))]


SPECIAL_TOKENS = ("<pad>", "<unk>")
VOCABULARY = SPECIAL_TOKENS + ("a", "in", "the", *SIZES, *COLOUR_NAMES, *SHAPES, "top", "bottom", "left", "right",
                               "of", "above", "below")
MAX_WORDS = 12


class CaptionTokenizer:
    """Word-level tokenizer of the caption grammar: id 0 is padding, id 1 the unknown word.

    A word outside the vocabulary becomes ``<unk>`` and a warning names it (``strict=True`` raises instead): the
    text encoder never saw it, so the model treats it as "some word I do not know".
    """

    def __init__(self, vocabulary: tuple[str, ...] = VOCABULARY, max_words: int = MAX_WORDS):
        self.vocabulary = vocabulary
        self.index = {w: i for i, w in enumerate(vocabulary)}
        self.max_words = max_words
        self.pad_id, self.unk_id = 0, 1

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    def encode(self, texts: list[str] | str, strict: bool = False) -> torch.Tensor:
        """(N, max_words) token ids, padded with 0."""
        if isinstance(texts, str):
            texts = [texts]
        ids = torch.zeros(len(texts), self.max_words, dtype=torch.long)
        unknown: list[str] = []
        for row, text in enumerate(texts):
            words = text.lower().replace(",", " ").split()
            if not words:
                raise ValueError(f"caption {row} is empty: give at least one word")
            if len(words) > self.max_words:
                raise ValueError(f"caption {text!r} has {len(words)} words; at most {self.max_words} are allowed")
            for col, word in enumerate(words):
                if word not in self.index:
                    unknown.append(word)
                ids[row, col] = self.index.get(word, self.unk_id)
        if unknown:
            msg = (f"words outside the caption vocabulary, encoded as <unk>: {sorted(set(unknown))} "
                   f"(known words: {' '.join(self.vocabulary[2:])})")
            if strict:
                raise ValueError(msg)
            warnings.warn(msg, stacklevel=2)
        return ids

    def decode(self, ids: torch.Tensor) -> list[str]:
        return [" ".join(self.vocabulary[i] for i in row.tolist() if i != self.pad_id) for row in ids]


def parse_caption(text: str) -> Scenes:
    """The scene a caption asks for, with sizes/positions at their class centres (for judging prompts).

    Raises ValueError if the caption is not a sentence of the grammar.
    """
    words = text.lower().split()
    g = torch.Generator().manual_seed(0)

    def need(cond: bool) -> None:
        if not cond:
            raise ValueError(f"{text!r} is not a caption of the grammar: 'a <size> <colour> <shape> in the "
                             f"<top|bottom> <left|right>' or 'a <colour> <shape> <left of|right of|above|below> "
                             f"a <colour> <shape>'")

    need(len(words) >= 7 and words[0] == "a")
    if words[4:6] == ["in", "the"]:
        need(len(words) == 8 and words[1] in SIZES and words[2] in COLOUR_NAMES and words[3] in SHAPES
             and " ".join(words[6:]) in QUADRANTS)
        q = QUADRANTS.index(" ".join(words[6:]))
        n_obj = torch.tensor([1])
        scenes = _place(n_obj, torch.tensor([[SHAPES.index(words[3]), 0]]),
                        torch.tensor([[COLOUR_NAMES.index(words[2]), 0]]), g)
        scenes.size[0, 0] = SIZES.index(words[1])
        scenes.diameter[0, 0] = sum(LARGE_DIAMETER if words[1] == "large" else SMALL_DIAMETER) / 2
        scenes.cx[0, 0] = 4.0 + 8.0 * (q % 2)
        scenes.cy[0, 0] = 4.0 + 8.0 * (q // 2)
        return scenes
    need(words[1] in COLOUR_NAMES and words[2] in SHAPES)
    rest = words[3:]
    if rest[:2] in (["left", "of"], ["right", "of"]):
        rel, tail = " ".join(rest[:2]), rest[2:]
    else:
        rel, tail = rest[0], rest[1:]
    need(rel in ("left of", "right of", "above", "below") and len(tail) == 3 and tail[0] == "a"
         and tail[1] in COLOUR_NAMES and tail[2] in SHAPES and tail[1] != words[1])
    first = (SHAPES.index(words[2]), COLOUR_NAMES.index(words[1]))
    second = (SHAPES.index(tail[2]), COLOUR_NAMES.index(tail[1]))
    swap = rel in ("right of", "below")
    a, b = (second, first) if swap else (first, second)
    scenes = _place(torch.tensor([2]), torch.tensor([[a[0], b[0]]]), torch.tensor([[a[1], b[1]]]), g)
    relation = 0 if rel in ("left of", "right of") else 1
    scenes.relation[0] = relation
    scenes.swap[0] = swap
    along, across = torch.tensor([4.0, 12.0], dtype=torch.float64), torch.tensor([8.0, 8.0], dtype=torch.float64)
    scenes.cx[0], scenes.cy[0] = (along, across) if relation == 0 else (across, along)
    return scenes


# ---- the dataset ---------------------------------------------------------------------------------------------


@dataclass
class ShapesData:
    """Rendered images with their scenes and captions."""

    images: torch.Tensor  # (N, 3, H, W) in [0, 1]
    scenes: Scenes
    captions: list[str]

    def __len__(self) -> int:
        return self.images.shape[0]


_DATA_CACHE: dict[tuple, ShapesData] = {}


def make_shapes(n: int, kind: str = "single", split: str = "train", seed: int = 0,
                resolution: int = BASE_RESOLUTION) -> ShapesData:
    """``n`` rendered scenes with captions (memoised: the same arguments return the same object)."""
    key = (n, kind, split, seed, resolution)
    if key not in _DATA_CACHE:
        scenes = sample_scenes(n, kind, split, seed)
        _DATA_CACHE[key] = ShapesData(render(scenes, resolution), scenes, captions(scenes))
    return _DATA_CACHE[key]


def class_labels(scenes: Scenes) -> torch.Tensor:
    """(N,) class index colour * len(SHAPES) + shape of object 0 (12 classes), for class conditioning."""
    return scenes.colour[:, 0] * len(SHAPES) + scenes.shape[:, 0]


def class_name(label: int) -> str:
    return f"{COLOUR_NAMES[label // len(SHAPES)]} {SHAPES[label % len(SHAPES)]}"


N_CLASSES = len(COLOUR_NAMES) * len(SHAPES)


# ---- 2-D toy distributions -----------------------------------------------------------------------------------

TOYS = ("moons", "checkerboard", "eight_gaussians", "spirals")


def sample_toy(name: str, n: int, seed: int = 0, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, 2) float32 samples of a 2-D toy distribution, scaled to roughly unit variance per axis."""
    if name not in TOYS:
        raise ValueError(f"unknown toy distribution {name!r}: choose one of {', '.join(TOYS)}")
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    if name == "moons":
        which = torch.rand(n, generator=g) < 0.5
        angle = math.pi * torch.rand(n, generator=g)
        x = torch.where(which, torch.cos(angle), 1 - torch.cos(angle))
        y = torch.where(which, torch.sin(angle), 0.5 - torch.sin(angle))
        pts = torch.stack([x - 0.5, y - 0.25], 1) * 1.6 + 0.08 * torch.randn(n, 2, generator=g)
    elif name == "checkerboard":
        x = 4 * torch.rand(n, generator=g) - 2
        y = torch.rand(n, generator=g) + 2 * torch.randint(0, 2, (n,), generator=g) - 2
        y = y + (torch.floor(x) % 2)
        pts = torch.stack([x, y], 1) * 0.9
    elif name == "eight_gaussians":
        k = torch.randint(0, 8, (n,), generator=g)
        centres = torch.stack([torch.cos(k * math.pi / 4), torch.sin(k * math.pi / 4)], 1) * 2
        pts = centres + 0.15 * torch.randn(n, 2, generator=g)
    else:  # spirals
        t = torch.sqrt(torch.rand(n, generator=g)) * 3 * math.pi
        arm = torch.where(torch.rand(n, generator=g) < 0.5, 1.0, -1.0)
        pts = arm[:, None] * torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) / 4.0
        pts = pts + 0.08 * torch.randn(n, 2, generator=g)
    return pts.float()
