"""The toy city: procedural street scenes with pixel-exact labels.

A scene is drawn once (geometry, Cityscapes label ids, metric depth, clear-weather albedo, light
sources) and then rendered in a style (``toy_styles``): clear, fog, night, rain or snow. The
writer lays the result out as Cityscapes (clear) and ACDC (the other styles), so the real
dataset readers are what the demo and the tests exercise.

Camera model: horizon row ``yh``, vanishing column ``xv``, camera height 1.6 m, focal ``f`` px.
A ground point ``s`` rows below the horizon is ``d = 1.6 f / s`` metres away and one metre
there spans ``s / 1.6`` pixels.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError

# Cityscapes label ids used by the toy city (12 of the 19 classes, plus ego vehicle = void).
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN = 7, 8, 11, 12, 13, 17, 19, 20
VEGETATION, TERRAIN, SKY, PERSON, RIDER, CAR, TRUCK, BUS, BICYCLE = 21, 22, 23, 24, 25, 26, 27, 28, 33
EGO = 1
CAM_H = 1.6
FAR = 1000.0

CONDITIONS = ("clear", "fog", "night", "rain", "snow", "thermal")   # the order fixes each one's seed stream
WEATHER = CONDITIONS[:5]                                             # the default city's


@dataclass
class Scene:
    """One layout. ``label`` holds Cityscapes label ids; ``depth`` metres; ``albedo`` in [0, 1]."""

    label: np.ndarray                      # (H, W) uint8
    depth: np.ndarray                      # (H, W) float32
    albedo: np.ndarray                     # (H, W, 3) float32
    windows: np.ndarray                    # (H, W) bool, glass that may be lit at night
    roofs: np.ndarray                      # (H, W) bool, upward surfaces above the ground (snow)
    horizon: float
    vanish: float
    lights: list = field(default_factory=list)   # (x, y, radius_px, (r, g, b), kind)


class _Canvas:
    def __init__(self, w: int, h: int, rng: np.random.Generator):
        self.w, self.h, self.rng = w, h, rng
        self.label = np.full((h, w), SKY, np.uint8)
        self.depth = np.full((h, w), FAR, np.float32)
        self.albedo = np.zeros((h, w, 3), np.float32)
        self.windows = np.zeros((h, w), bool)
        self.roofs = np.zeros((h, w), bool)
        self.yy, self.xx = np.mgrid[0:h, 0:w].astype(np.float32)
        self.lights: list = []

    def paint(self, mask, label, color, depth, texture=0.04):
        """Paint ``mask`` (closer things are painted later) with a textured colour."""
        if not mask.any():
            return
        n = int(mask.sum())
        noise = self.rng.normal(0, texture, (n, 1)).astype(np.float32) + self.rng.normal(0, texture / 2, (n, 3))
        self.albedo[mask] = np.clip(np.asarray(color, np.float32) + noise, 0, 1)
        self.label[mask] = label
        self.depth[mask] = depth if np.isscalar(depth) else depth[mask]
        self.windows[mask] = False
        self.roofs[mask] = False

    def box(self, x0, x1, y0, y1):
        return (self.xx >= x0) & (self.xx < x1) & (self.yy >= y0) & (self.yy < y1)

    def ellipse(self, cx, cy, rx, ry):
        return ((self.xx - cx) / max(rx, 0.5)) ** 2 + ((self.yy - cy) / max(ry, 0.5)) ** 2 <= 1.0


def _jitter(rng, base, amount=0.06):
    return np.clip(np.asarray(base) + rng.uniform(-amount, amount, 3), 0, 1)


def generate_scene(rng: np.random.Generator, width: int = 256, height: int = 128) -> Scene:
    c = _Canvas(width, height, rng)
    yh = height * rng.uniform(0.36, 0.48)
    xv = width * rng.uniform(0.38, 0.62)
    f = width * 0.8
    a = rng.uniform(1.4, 2.1)            # road half-width, px per row below the horizon
    b = rng.uniform(0.5, 0.9)            # sidewalk width, same unit
    s = np.maximum(c.yy - yh, 1e-3)      # rows below the horizon
    ground_depth = np.where(c.yy > yh, CAM_H * f / s, FAR).astype(np.float32)

    # Sky: a vertical gradient, brighter near the horizon.
    t = np.clip(c.yy / max(yh, 1), 0, 1)[..., None]
    c.albedo[:] = (1 - t) * np.array([0.35, 0.55, 0.85]) + t * np.array([0.7, 0.8, 0.92])

    # Ground: road, sidewalks, terrain beyond; lane dashes on the road.
    below = c.yy > yh
    dx = np.abs(c.xx - xv)
    road = below & (dx < a * s)
    walk = below & ~road & (dx < (a + b) * s)
    terr = below & ~road & ~walk
    c.paint(terr, TERRAIN, _jitter(rng, [0.45, 0.55, 0.25]), ground_depth, 0.06)
    c.paint(walk, SIDEWALK, _jitter(rng, [0.68, 0.6, 0.6], 0.04), ground_depth, 0.03)
    c.paint(road, ROAD, _jitter(rng, [0.33, 0.32, 0.34], 0.03), ground_depth, 0.025)
    dash = road & (np.abs(c.xx - xv) < np.maximum(0.12 * s / CAM_H, 0.4)) & ((ground_depth % 8.0) < 4.0)
    c.albedo[dash] = [0.92, 0.92, 0.88]

    # Roadside segments: buildings, walls, fences, hedges, gaps; both sides, near to far.
    for side in (-1, 1):
        edge = xv if side < 0 else width - xv      # columns between image border and vanishing point
        x = 0.0
        while x < edge - 2:
            seg_w = max(3.0, rng.uniform(0.15, 0.45) * (edge - x))
            kind = rng.choice(["building", "building", "building", "vegetation", "wall", "gap"], p=[.3, .25, .15, .14, .08, .08])
            _roadside(c, rng, side, xv, yh, a + b, x, min(x + seg_w, edge - 0.5), kind, f)
            x += seg_w

    # Objects, far to near so nearer ones occlude.
    objects = []
    for _ in range(rng.integers(2, 7)):
        objects.append(("car", rng.uniform(3, 0.7 * (height - yh)), rng.uniform(-0.8, 0.8)))
    if rng.random() < 0.35:
        objects.append((rng.choice(["truck", "bus"]), rng.uniform(4, 0.5 * (height - yh)), rng.choice([-0.5, 0.5])))
    for _ in range(rng.integers(1, 6)):
        objects.append(("person", rng.uniform(3, height - yh - 2), rng.choice([-1, 1]) * rng.uniform(0.15, 0.85)))
    if rng.random() < 0.3:
        objects.append(("cyclist", rng.uniform(4, height - yh - 4), rng.choice([-0.9, 0.9])))
    for _ in range(rng.integers(2, 6)):
        objects.append((rng.choice(["sign", "light", "lamp", "lamp", "tree"]), rng.uniform(3, height - yh - 1), rng.choice([-1, 1])))
    objects.sort(key=lambda o: o[1])
    for kind, sb, u in objects:
        _OBJECTS[kind](c, rng, xv, yh + sb, sb, u, a, b, f)

    # Ego vehicle bonnet (void) on some frames.
    if rng.random() < 0.3:
        hood = c.ellipse(width / 2, height * 1.12, width * 0.7, height * rng.uniform(0.14, 0.2))
        c.paint(hood, EGO, _jitter(rng, [0.15, 0.15, 0.17]), 1.0, 0.02)
    return Scene(c.label, c.depth, c.albedo, c.windows, c.roofs, yh, xv, c.lights)


def _roadside(c: _Canvas, rng, side, xv, yh, ab, x0, x1, kind, f):
    """A facade segment between ``x0`` and ``x1`` px from the image border (left or right)."""
    cols = (c.xx >= x0) & (c.xx < x1) if side < 0 else (c.xx > c.w - 1 - x1) & (c.xx <= c.w - 1 - x0)
    off = np.abs(c.xx - xv)                         # distance from the vanishing column
    base = yh + off / ab                            # where the facade meets the sidewalk edge
    rise = off / ab                                 # rows per "base unit" of height at this column
    depth = (CAM_H * f / np.maximum(rise, 1e-3)).astype(np.float32)
    if kind == "gap":
        return
    if kind == "building":
        k = rng.uniform(1.8, 5.0)
        top = yh - k * rise
        mask = cols & (c.yy >= top) & (c.yy < base)
        color = _jitter(rng, [[0.62, 0.52, 0.42], [0.55, 0.55, 0.58], [0.6, 0.35, 0.28], [0.75, 0.7, 0.58]][rng.integers(4)], 0.05)
        c.paint(mask, BUILDING, color, depth, 0.03)
        # Windows on a regular facade grid; the ground floor is a shop front.
        u = (c.xx - xv) / np.maximum(rise, 1e-3)       # facade coordinate along the street
        v = (base - c.yy) / np.maximum(base - top, 1e-3)
        nu, nv = rng.uniform(1.2, 2.2), rng.integers(3, 7) / k * 2.0
        win = mask & ((u * nu) % 1.0 > 0.35) & ((u * nu) % 1.0 < 0.8) & ((v * nv * k) % 1.0 > 0.3) & ((v * nv * k) % 1.0 < 0.75) & (v > 0.18) & (v < 0.94)
        c.albedo[win] = _jitter(rng, [0.22, 0.28, 0.36], 0.03)
        c.windows |= win
        c.roofs |= mask & (v > 0.965)
    elif kind == "wall":
        mask = cols & (c.yy >= base - rng.uniform(0.5, 1.0) * rise) & (c.yy < base)
        c.paint(mask, WALL, _jitter(rng, [0.6, 0.58, 0.52]), depth, 0.04)
        c.roofs |= mask & (c.yy < base - 0.9 * rise)
    elif kind == "vegetation":
        k = rng.uniform(1.0, 2.6)
        wobble = 1 + 0.25 * np.sin(c.xx * rng.uniform(0.2, 0.6) + rng.uniform(0, 6))
        mask = cols & (c.yy >= yh - k * rise * wobble) & (c.yy < base)
        c.paint(mask, VEGETATION, _jitter(rng, [0.25, 0.42, 0.15]), depth, 0.08)
        c.roofs |= mask & (c.yy < yh - k * rise * wobble + 0.15 * rise)
    # A fence in front of some segments.
    if kind != "wall" and rng.random() < 0.25:
        fence = cols & (c.yy >= base - 0.45 * rise) & (c.yy < base) & ((c.xx % 3) != 0)
        c.paint(fence, FENCE, _jitter(rng, [0.55, 0.45, 0.35]), depth * 0.98, 0.04)


def _ground_x(xv, sb, u, a, b):
    """Column of lateral position ``u``: |u| < 1 on the road, 1..2 across the sidewalk."""
    sign = np.sign(u) if u != 0 else 1
    if abs(u) <= 1:
        return xv + u * a * sb
    return xv + sign * (a + (abs(u) - 1) * b) * sb


def _car(c, rng, xv, yb, sb, u, a, b, f, wm=1.8, hm=1.5, label=CAR):
    ppm = sb / CAM_H
    xc = _ground_x(xv, sb, u, a, b)
    w, h = wm * ppm, hm * ppm
    d = CAM_H * f / sb
    color = _jitter(rng, [[0.7, 0.1, 0.1], [0.1, 0.2, 0.6], [0.85, 0.85, 0.85], [0.1, 0.1, 0.1], [0.5, 0.5, 0.52], [0.8, 0.7, 0.2]][rng.integers(6)], 0.05)
    body = c.box(xc - w / 2, xc + w / 2, yb - 0.55 * h, yb - 0.1 * h)
    cabin = c.box(xc - 0.4 * w, xc + 0.4 * w, yb - h, yb - 0.5 * h)
    wheels = c.box(xc - 0.45 * w, xc - 0.25 * w, yb - 0.15 * h, yb) | c.box(xc + 0.25 * w, xc + 0.45 * w, yb - 0.15 * h, yb)
    c.paint(body | cabin, label, color, d, 0.02)
    c.paint(wheels, label, [0.05, 0.05, 0.05], d, 0.01)
    glass = c.box(xc - 0.35 * w, xc + 0.35 * w, yb - 0.92 * h, yb - 0.58 * h)
    c.albedo[glass] = [0.15, 0.2, 0.25]
    c.roofs |= c.box(xc - 0.4 * w, xc + 0.4 * w, yb - h, yb - 0.93 * h)
    oncoming = xc < xv
    lamp = (1.0, 0.95, 0.8) if oncoming else (0.9, 0.05, 0.05)
    for lx in (xc - 0.38 * w, xc + 0.38 * w):
        c.lights.append((lx, yb - 0.35 * h, max(0.12 * w, 0.6), lamp, "head" if oncoming else "tail"))


def _truck(c, rng, xv, yb, sb, u, a, b, f):
    _car(c, rng, xv, yb, sb, u, a, b, f, wm=2.5, hm=3.2, label=TRUCK)


def _bus(c, rng, xv, yb, sb, u, a, b, f):
    ppm = sb / CAM_H
    xc = _ground_x(xv, sb, u, a, b)
    w, h, d = 2.5 * ppm, 3.1 * ppm, CAM_H * f / sb
    body = c.box(xc - w / 2, xc + w / 2, yb - h, yb - 0.05 * h)
    c.paint(body, BUS, _jitter(rng, [[0.9, 0.75, 0.1], [0.15, 0.45, 0.75], [0.8, 0.15, 0.15]][rng.integers(3)]), d, 0.02)
    band = c.box(xc - 0.45 * w, xc + 0.45 * w, yb - 0.85 * h, yb - 0.55 * h)
    c.albedo[band] = [0.15, 0.2, 0.25]
    c.windows |= band
    c.roofs |= c.box(xc - w / 2, xc + w / 2, yb - h, yb - 0.97 * h)
    c.lights.append((xc, yb - 0.2 * h, max(0.1 * w, 0.6), (1.0, 0.95, 0.8), "head"))


def _person(c, rng, xv, yb, sb, u, a, b, f, label=PERSON):
    ppm = sb / CAM_H
    u = np.sign(u) * (1 + abs(u) % 1.0) if label == PERSON else u  # people walk on the sidewalk
    xc = _ground_x(xv, sb, u, a, b)
    h, w, d = 1.75 * ppm, 0.5 * ppm, CAM_H * f / sb
    head = c.ellipse(xc, yb - 0.9 * h, 0.12 * ppm, 0.12 * ppm)
    torso = c.box(xc - w / 2, xc + w / 2, yb - 0.8 * h, yb - 0.45 * h)
    legs = c.box(xc - 0.4 * w, xc - 0.05 * w, yb - 0.47 * h, yb) | c.box(xc + 0.05 * w, xc + 0.4 * w, yb - 0.47 * h, yb)
    c.paint(torso, label, _jitter(rng, rng.uniform(0.05, 0.9, 3), 0.0), d, 0.03)
    c.paint(legs, label, _jitter(rng, [0.15, 0.15, 0.3]), d, 0.03)
    c.paint(head, label, _jitter(rng, [0.85, 0.65, 0.5]), d, 0.02)


def _cyclist(c, rng, xv, yb, sb, u, a, b, f):
    ppm = sb / CAM_H
    xc = _ground_x(xv, sb, u, a, b)
    d = CAM_H * f / sb
    r = 0.35 * ppm
    wheels = c.ellipse(xc - 0.55 * ppm, yb - r, r, r) | c.ellipse(xc + 0.55 * ppm, yb - r, r, r)
    frame = c.box(xc - 0.55 * ppm, xc + 0.55 * ppm, yb - 1.1 * r, yb - 0.9 * r) | c.box(xc - 0.05 * ppm, xc + 0.05 * ppm, yb - 2.2 * r, yb - r)
    c.paint(wheels | frame, BICYCLE, [0.1, 0.1, 0.1], d, 0.02)
    _person(c, rng, xv, yb - 0.6 * ppm, sb, u, a, b, f, label=RIDER)


def _pole_with(c, rng, xv, yb, sb, u, a, b, f, top):
    ppm = sb / CAM_H
    xc = _ground_x(xv, sb, np.sign(u) * 1.05, a, b)
    d = CAM_H * f / sb
    pw = max(0.15 * ppm, 0.7)
    hgt = (3.2 if top != "lamp" else 5.5) * ppm
    c.paint(c.box(xc - pw / 2, xc + pw / 2, yb - hgt, yb), POLE, _jitter(rng, [0.45, 0.45, 0.47]), d, 0.02)
    if top == "sign":
        sw = 0.7 * ppm
        shape = c.ellipse(xc, yb - hgt, sw / 2, sw / 2) if rng.random() < 0.5 else c.box(xc - sw / 2, xc + sw / 2, yb - hgt - sw / 2, yb - hgt + sw / 2)
        c.paint(shape, SIGN, _jitter(rng, [[0.85, 0.1, 0.1], [0.1, 0.3, 0.8], [0.95, 0.8, 0.1]][rng.integers(3)], 0.03), d * 0.99, 0.02)
    elif top == "light":
        box = c.box(xc - 0.2 * ppm, xc + 0.2 * ppm, yb - hgt - 0.9 * ppm, yb - hgt)
        c.paint(box, LIGHT, [0.12, 0.12, 0.1], d * 0.99, 0.02)
        lit = [(0.9, 0.1, 0.1), (0.95, 0.7, 0.1), (0.1, 0.9, 0.3)][rng.integers(3)]
        ly = yb - hgt - 0.75 * ppm + 0.3 * ppm * rng.integers(3)
        c.albedo[c.ellipse(xc, ly, 0.12 * ppm, 0.12 * ppm) & box] = lit
        c.lights.append((xc, ly, max(0.15 * ppm, 0.6), lit, "signal"))
    else:  # street lamp: the head is part of the pole
        arm = c.box(xc - (0.8 * ppm if u > 0 else -0.1 * ppm), xc + (0.1 * ppm if u > 0 else 0.8 * ppm), yb - hgt - 0.15 * ppm, yb - hgt)
        c.paint(arm, POLE, [0.4, 0.4, 0.42], d, 0.02)
        hx = xc - 0.7 * ppm if u > 0 else xc + 0.7 * ppm
        c.lights.append((hx, yb - hgt, max(0.25 * ppm, 0.8), (1.0, 0.85, 0.55), "lamp"))


def _tree(c, rng, xv, yb, sb, u, a, b, f):
    ppm = sb / CAM_H
    xc = _ground_x(xv, sb, np.sign(u) * 1.8, a, b)
    d = CAM_H * f / sb
    trunk = c.box(xc - 0.15 * ppm, xc + 0.15 * ppm, yb - 3 * ppm, yb)
    r = rng.uniform(1.3, 2.2) * ppm
    crown = c.ellipse(xc, yb - 3 * ppm - 0.6 * r, r, r * 0.9)
    c.paint(trunk | crown, VEGETATION, _jitter(rng, [0.2, 0.38, 0.12]), d, 0.09)
    c.albedo[trunk & ~crown] = [0.3, 0.22, 0.15]
    c.roofs |= crown & (c.yy < yb - 3 * ppm - 1.2 * r)


_OBJECTS = {
    "car": _car, "truck": _truck, "bus": _bus, "person": _person, "cyclist": _cyclist, "tree": _tree,
    "sign": lambda *a: _pole_with(*a, top="sign"), "light": lambda *a: _pole_with(*a, top="light"),
    "lamp": lambda *a: _pole_with(*a, top="lamp"),
}


# ---------------------------------------------------------------------------------------------
# Writing the Cityscapes / ACDC layouts

SPLITS = ("train", "val")


def scene_rng(seed: int, domain: int, split: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, domain, split, index])


def make_toy(out, n_train: int = 200, n_val: int = 50, seed: int = 0, width: int = 256, height: int = 128,
             conditions=WEATHER, progress=None) -> dict:
    """Write the toy city under ``out``: ``cityscapes/`` (clear), ``acdc/`` (the other weathers) and
    ``thermal/<split>/{images,labels}/`` (the infrared-like sensor, a plain folder pair).

    Each condition has its own scenes, as real target sets do: a seed stream per condition of
    ``CONDITIONS``, so a city of fewer conditions holds the same images for those. Returns the
    manifest (also written to ``out/toy.json``)."""
    from . import classsets
    from .images import write_png
    from .toy_styles import render

    out = Path(out)
    manifest = {"generator": "zodi toy city v1", "n_train": n_train, "n_val": n_val, "seed": seed,
                "width": width, "height": height, "conditions": list(conditions)}
    if (out / "toy.json").is_file() and json.loads((out / "toy.json").read_text()) == manifest:
        return manifest                     # deterministic: an identical city is already there
    colors = classsets.label_id_colors()
    counts = {"train": n_train, "val": n_val}
    total = sum(counts.values()) * len(conditions)
    done = 0
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown:
        raise InputError(f"unknown toy condition {unknown[0]!r}", f"choose from {', '.join(CONDITIONS)}")
    for cond in conditions:
        di = CONDITIONS.index(cond)
        for si, split in enumerate(SPLITS):
            for i in range(counts[split]):
                rng = scene_rng(seed, di, si, i)
                scene = generate_scene(rng, width, height)
                img = render(scene, cond, rng)
                if cond == "clear":
                    city = "toytown" if split == "train" else "toyville"
                    stem = f"{city}_{si:06d}_{i:06d}"
                    write_png(out / "cityscapes/leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", img)
                    gt = out / "cityscapes/gtFine" / split / city
                    write_png(gt / f"{stem}_gtFine_labelIds.png", scene.label)
                    write_png(gt / f"{stem}_gtFine_color.png", colors[scene.label])
                elif cond == "thermal":
                    stem = f"thermal_{si:02d}_{i:06d}"
                    write_png(out / "thermal" / split / "images" / f"{stem}.png", img)
                    write_png(out / "thermal" / split / "labels" / f"{stem}.png", scene.label)
                else:
                    seq = f"GOPR{di:02d}{si:02d}"
                    stem = f"{seq}_frame_{i:06d}"
                    write_png(out / "acdc/rgb_anon" / cond / split / seq / f"{stem}_rgb_anon.png", img)
                    gt = out / "acdc/gt" / cond / split / seq
                    write_png(gt / f"{stem}_gt_labelIds.png", scene.label)
                    write_png(gt / f"{stem}_gt_labelColor.png", colors[scene.label])
                done += 1
                if progress:
                    progress(done, total)
    (out / "toy.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
