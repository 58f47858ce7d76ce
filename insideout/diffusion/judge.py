"""A programmatic judge of shape images: which objects an image shows, and whether they match a caption.

The judge reads an image the way the renderer wrote it, without any learning:

1. **Colour.** Every object colour ``c_k`` is a ray ``a * c_k`` from black (``a`` is the coverage). Each pixel ``p``
   is projected on every ray, ``a_k = <p, c_k> / |c_k|^2``, and assigned to the ray it lies closest to; it is
   foreground when its coverage ``a`` is at least one half.
2. **Objects.** The foreground pixels of each colour are split into 8-connected components; a component whose soft
   area (the sum of coverages over it and its one-pixel border) is below ``min_area`` is noise and ignored.
3. **Shape.** For each shape, a template of the same soft area is drawn at the object's centre of mass; the shape
   whose template overlaps best (soft intersection over union) wins, and that overlap is the object's *fit*.
4. **Size and position.** The diameter that the chosen shape needs for the measured area, against the data's
   threshold between small and large; the centre of mass, in pixels.

``score`` compares what the judge read with the scenes an image was meant to show (attribute by attribute), and
``validity`` says whether an unconditional sample is a well-formed scene of the dataset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from insideout.diffusion.data import BASE_RESOLUTION, COLOURS, SIZE_THRESHOLD, Scenes, check_images, coverage

FILL = torch.tensor([math.pi / 4, 1.0, 0.5], dtype=torch.float64)  # area / diameter^2 of circle, square, triangle
MIN_AREA = 4.0  # pixels at BASE_RESOLUTION; the smallest object of the data (a small triangle) covers ~10
MIN_FIT = 0.6  # a well-formed object overlaps its best template by at least this much


@dataclass
class JudgedObject:
    colour: int  # index into COLOUR_NAMES
    shape: int  # index into SHAPES
    size: int  # 0 small, 1 large
    diameter: float  # at BASE_RESOLUTION
    cx: float  # centre of mass, pixels at BASE_RESOLUTION
    cy: float
    area: float  # soft area, pixels at BASE_RESOLUTION
    fit: float  # soft IoU with the best template, in [0, 1]


def colour_coverage(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel, the colour it is closest to (N, H, W) and its coverage along that colour (N, H, W) in [0, 1]."""
    c = COLOURS.to(images.dtype)  # (K, 3)
    a = torch.einsum("nchw,kc->nkhw", images, c) / (c * c).sum(1)[None, :, None, None]  # (N, K, H, W)
    a = a.clamp(0, 1)
    residual = ((images[:, None] - a[:, :, None] * c[None, :, :, None, None]) ** 2).sum(2)  # (N, K, H, W)
    label = residual.argmin(1)
    return label, a.gather(1, label[:, None]).squeeze(1)


def find_objects(images: torch.Tensor) -> list[list[JudgedObject]]:
    """For each image (N, 3, H, W) in [0, 1], the objects the judge reads in it."""
    images = check_images(images)
    n, _, res, _ = images.shape
    scale = res / BASE_RESOLUTION
    label, a = colour_coverage(images.double())
    fg = (a >= 0.5).numpy()
    label_np, a_np = label.numpy(), a.numpy()
    eight = np.ones((3, 3), dtype=bool)
    found: list[list[dict]] = [[] for _ in range(n)]
    weights, owners = [], []
    rows = np.arange(res)[:, None] + 0.5
    cols = np.arange(res)[None, :] + 0.5
    for i in range(n):
        for k in range(COLOURS.shape[0]):
            mask = fg[i] & (label_np[i] == k)
            if not mask.any():
                continue
            comps, count = ndimage.label(mask, structure=eight)
            for j in range(1, count + 1):
                region = ndimage.binary_dilation(comps == j, structure=eight) & (label_np[i] == k)
                w = np.where(region, a_np[i], 0.0)
                area = w.sum()
                if area / scale**2 < MIN_AREA:
                    continue
                cy = (w * rows).sum() / area / scale
                cx = (w * cols).sum() / area / scale
                found[i].append({"colour": k, "area": area / scale**2, "cx": cx, "cy": cy})
                weights.append(w)
                owners.append((i, len(found[i]) - 1))
    if not weights:
        return [[] for _ in range(n)]
    w = torch.from_numpy(np.stack(weights))  # (M, H, W)
    area = torch.tensor([found[i][j]["area"] for i, j in owners], dtype=torch.float64)
    cx = torch.tensor([found[i][j]["cx"] for i, j in owners], dtype=torch.float64)
    cy = torch.tensor([found[i][j]["cy"] for i, j in owners], dtype=torch.float64)
    fits = []
    for s in range(3):
        d = torch.sqrt(area / FILL[s])
        box_cy = cy - d / 6 if s == 2 else cy  # a triangle's centre of mass lies d/6 below its box centre
        fits.append(_soft_iou(w, s, d, cx, box_cy, res))
    fits = torch.stack(fits, 1)  # (M, 3)
    best = fits.argmax(1)
    out: list[list[JudgedObject]] = [[] for _ in range(n)]
    for m, (i, j) in enumerate(owners):
        s = int(best[m])
        d = math.sqrt(float(area[m]) / float(FILL[s]))
        o = found[i][j]
        out[i].append(JudgedObject(colour=o["colour"], shape=s, size=int(d >= SIZE_THRESHOLD), diameter=d,
                                   cx=float(o["cx"]), cy=float(o["cy"]), area=float(o["area"]),
                                   fit=float(fits[m, s])))
    return out


def _soft_iou(w: torch.Tensor, shape: int, d: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, res: int,
              chunk: int = 256) -> torch.Tensor:
    out = []
    for start in range(0, w.shape[0], chunk):
        sl = slice(start, start + chunk)
        kind = torch.full((w[sl].shape[0],), shape, dtype=torch.long)
        t = coverage(kind, d[sl], cx[sl], cy[sl], res, supersample=4)
        inter = torch.minimum(w[sl], t).sum((1, 2))
        union = torch.maximum(w[sl], t).sum((1, 2))
        out.append(inter / union.clamp_min(1e-9))
    return torch.cat(out)


def score(images: torch.Tensor, scenes: Scenes, objects: list[list[JudgedObject]] | None = None
          ) -> dict[str, torch.Tensor]:
    """Per image, whether what it shows matches the scene it was asked for, attribute by attribute.

    Returns boolean tensors (N,): ``count`` (as many objects as asked), ``colour``, ``shape`` (each asked-for
    object's colour is present, and that object has the asked shape; for pairs both must hold), ``size`` and
    ``position`` (single objects: size class and quadrant; NaN-free False for pairs is avoided by the ``single``
    mask), ``relation`` (pairs: object 0 left of / above object 1 along the dominant axis), and ``all`` (every
    attribute the caption names, and the right count). ``single`` marks which scenes are single objects.
    """
    if objects is None:
        objects = find_objects(images)
    n = len(scenes)
    if len(objects) != n:
        raise ValueError(f"{len(objects)} judged images for {n} scenes: give one scene per image")
    res = {k: torch.zeros(n, dtype=torch.bool) for k in ("count", "colour", "shape", "size", "position",
                                                         "relation", "all")}
    single = scenes.n_objects == 1
    for i in range(n):
        objs = objects[i]
        k = int(scenes.n_objects[i])
        matched = []
        for slot in range(k):
            same = [o for o in objs if o.colour == int(scenes.colour[i, slot])]
            matched.append(max(same, key=lambda o: o.area) if same else None)
        res["count"][i] = len(objs) == k
        res["colour"][i] = all(m is not None for m in matched)
        res["shape"][i] = all(m is not None and m.shape == int(scenes.shape[i, slot]) for slot, m in
                              enumerate(matched))
        if k == 1:
            m = matched[0]
            if m is not None:
                res["size"][i] = m.size == int(scenes.size[i, 0])
                quadrant = 2 * int(m.cy >= BASE_RESOLUTION / 2) + int(m.cx >= BASE_RESOLUTION / 2)
                res["position"][i] = quadrant == int(scenes.quadrant[i])
            res["all"][i] = bool(res["count"][i] and res["colour"][i] and res["shape"][i] and res["size"][i]
                                 and res["position"][i])
        else:
            a, b = matched
            if a is not None and b is not None:
                dx, dy = b.cx - a.cx, b.cy - a.cy
                if int(scenes.relation[i]) == 0:
                    res["relation"][i] = dx > 0 and abs(dx) > abs(dy)
                else:
                    res["relation"][i] = dy > 0 and abs(dy) > abs(dx)
            res["all"][i] = bool(res["count"][i] and res["colour"][i] and res["shape"][i] and res["relation"][i])
    res["single"] = single
    return res


def accuracy(scores: dict[str, torch.Tensor]) -> dict[str, float]:
    """Fractions: each attribute over the scenes it applies to (size/position: singles; relation: pairs)."""
    single = scores["single"]
    out = {}
    for key in ("count", "colour", "shape", "all"):
        out[key] = scores[key].float().mean().item()
    for key, mask in (("size", single), ("position", single), ("relation", ~single)):
        if mask.any():
            out[key] = scores[key][mask].float().mean().item()
    return out


def validity(objects: list[list[JudgedObject]], kind: str = "single") -> torch.Tensor:
    """(N,) True where an unconditional sample is a well-formed scene: the right number of objects (1 for
    'single', 2 for 'pair', either for 'mixed'), of different colours, each fitting its shape template by at least
    MIN_FIT."""
    allowed = {"single": (1,), "pair": (2,), "mixed": (1, 2)}
    if kind not in allowed:
        raise ValueError(f"kind={kind!r}: choose one of {', '.join(allowed)}")
    out = torch.zeros(len(objects), dtype=torch.bool)
    for i, objs in enumerate(objects):
        out[i] = (len(objs) in allowed[kind] and len({o.colour for o in objs}) == len(objs)
                  and all(o.fit >= MIN_FIT for o in objs))
    return out


def attribute_frequencies(objects: list[list[JudgedObject]]) -> dict[str, torch.Tensor]:
    """Relative frequencies of colour (4), shape (3), size (2) and quadrant (4) over all objects read."""
    from insideout.diffusion.data import COLOUR_NAMES, QUADRANTS, SHAPES, SIZES

    counts = {"colour": torch.zeros(len(COLOUR_NAMES)), "shape": torch.zeros(len(SHAPES)),
              "size": torch.zeros(len(SIZES)), "quadrant": torch.zeros(len(QUADRANTS))}
    for objs in objects:
        for o in objs:
            counts["colour"][o.colour] += 1
            counts["shape"][o.shape] += 1
            counts["size"][o.size] += 1
            counts["quadrant"][2 * int(o.cy >= BASE_RESOLUTION / 2) + int(o.cx >= BASE_RESOLUTION / 2)] += 1
    return {k: v / v.sum().clamp_min(1) for k, v in counts.items()}
