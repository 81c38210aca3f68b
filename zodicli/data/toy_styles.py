"""Styles of the toy city. Each changes what surfaces look like, not only their colour:
fog hides things with distance, night leaves only lit things visible, rain wets and streaks,
snow covers upward surfaces. A segmenter trained on clear scenes falls apart on all four.
``thermal`` is another sensor: what a long-wave infrared camera would see."""
from __future__ import annotations

import numpy as np

from .toy import (BICYCLE, BUILDING, BUS, CAR, EGO, FENCE, LIGHT, PERSON, POLE, RIDER, ROAD, SIDEWALK, SIGN, SKY,
                  TERRAIN, TRUCK, VEGETATION, WALL, Scene)

STYLES = {}


def register(name):
    def deco(fn):
        STYLES[name] = fn
        return fn
    return deco


def render(scene: Scene, style: str, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 image of ``scene`` in ``style``."""
    img = STYLES[style](scene, rng)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _blur(img: np.ndarray, r: int = 1) -> np.ndarray:
    """Box blur of radius ``r`` along both image axes."""
    out = img.copy()
    for axis in (0, 1):
        acc = np.zeros_like(out)
        for k in range(-r, r + 1):
            acc += np.roll(out, k, axis=axis)
        out = acc / (2 * r + 1)
    return out


def _glow(h, w, lights, kinds, scale, falloff=2.0):
    """Additive light of point sources: (H, W, 3)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    acc = np.zeros((h, w, 3), np.float32)
    for x, y, r, color, kind in lights:
        if kind in kinds:
            d2 = ((xx - x) ** 2 + (yy - y) ** 2) / (r * scale) ** 2
            acc += np.asarray(color, np.float32) * (1.0 / (1.0 + d2 ** (falloff / 2)))[..., None]
    return acc


def _desaturate(img, amount):
    grey = img.mean(axis=2, keepdims=True)
    return img * (1 - amount) + grey * amount


@register("clear")
def clear(scene: Scene, rng) -> np.ndarray:
    return scene.albedo * rng.uniform(0.92, 1.05)


@register("fog")
def fog(scene: Scene, rng) -> np.ndarray:
    """Koschmieder: I = J·t + A·(1 − t), t = exp(−β·d); β grows so that ~20–40 m is half-hidden."""
    beta = rng.uniform(0.025, 0.05)
    t = np.exp(-beta * scene.depth)[..., None]
    airlight = np.array([0.78, 0.8, 0.82]) * rng.uniform(0.9, 1.05)
    img = _desaturate(scene.albedo, 0.4) * 0.85 * t + airlight * (1 - t)
    return img + rng.normal(0, 0.01, img.shape)


@register("night")
def night(scene: Scene, rng) -> np.ndarray:
    h, w = scene.label.shape
    img = scene.albedo * np.array([0.05, 0.06, 0.09]) * rng.uniform(0.7, 1.3)
    img[scene.label == SKY] = np.array([0.01, 0.015, 0.04]) + rng.uniform(0, 0.02)
    # Lit windows: a random half of the window cells glow warm.
    lit = scene.windows & (rng.random(scene.windows.shape) < 0.08)
    lit = _blur(lit.astype(np.float32), 1) > 0.1
    img[lit & scene.windows] = np.array([0.95, 0.8, 0.45]) * rng.uniform(0.6, 1.0)
    # Street lamps: a halo around the head and a pool of light on the ground below it.
    img += _glow(h, w, scene.lights, {"lamp"}, 2.5) * 0.6
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ground = np.isin(scene.label, (ROAD, SIDEWALK, TERRAIN))
    for x, y, r, color, kind in scene.lights:
        if kind == "lamp":
            pool_y = y + 10 * r
            pool = np.exp(-(((xx - x) / (6 * r)) ** 2 + ((yy - pool_y) / (2.5 * r)) ** 2))
            img += (ground * pool)[..., None] * scene.albedo * 2.2
    # Head- and tail-lights with glare, and their reflection on the road.
    img += _glow(h, w, scene.lights, {"head", "tail", "signal"}, 0.6, 3.0) * 0.8
    img += _glow(h, w, scene.lights, {"head"}, 2.0, 2.0) * 0.08
    img = img ** 0.9
    return img + rng.normal(0, 0.02, img.shape)


@register("rain")
def rain(scene: Scene, rng) -> np.ndarray:
    h, w = scene.label.shape
    img = _desaturate(scene.albedo, 0.5) * np.array([0.5, 0.53, 0.58])
    img[scene.label == SKY] = np.array([0.55, 0.57, 0.6]) + rng.uniform(-0.05, 0.05)
    # Wet ground: darker, mirroring what stands above it.
    wet = np.isin(scene.label, (ROAD, SIDEWALK))
    rows = np.arange(h)
    mirror_rows = np.clip(2 * int(scene.horizon) - rows + rng.integers(-2, 3), 0, h - 1)
    reflection = _blur(img[mirror_rows], 2)
    img[wet] = img[wet] * 0.55 + reflection[wet] * 0.45
    # Light mist, then streaks.
    t = np.exp(-0.012 * scene.depth)[..., None]
    img = img * t + np.array([0.55, 0.57, 0.6]) * (1 - t)
    streaks = np.zeros((h, w), np.float32)
    n = int(h * w * rng.uniform(0.004, 0.008))
    xs, ys = rng.integers(0, w, n), rng.integers(0, h, n)
    length, slant = rng.integers(6, 14), rng.uniform(-0.3, 0.3)
    for k in range(length):
        streaks[np.clip(ys + k, 0, h - 1), np.clip((xs + slant * k).astype(int), 0, w - 1)] = 1
    img = img * (1 - 0.35 * streaks[..., None]) + 0.75 * 0.35 * streaks[..., None]
    return _blur(img, 1) + rng.normal(0, 0.015, img.shape)


@register("snow")
def snow(scene: Scene, rng) -> np.ndarray:
    h, w = scene.label.shape
    img = _desaturate(scene.albedo, 0.3) * 0.85
    img[scene.label == SKY] = np.array([0.82, 0.84, 0.87]) + rng.uniform(-0.04, 0.04)
    white = np.array([0.9, 0.91, 0.94])
    # Snow cover: sidewalks and terrain fully, roofs and crowns partly, the road except tyre tracks.
    cover = np.zeros((h, w), np.float32)
    cover[np.isin(scene.label, (SIDEWALK, TERRAIN))] = 1.0
    cover[scene.roofs] = 0.9
    veg = scene.label == VEGETATION
    cover[veg] = (rng.random(int(veg.sum())) < 0.45) * 0.8
    road = scene.label == ROAD
    xx = np.arange(w)[None, :].repeat(h, 0)
    s = np.maximum(np.arange(h)[:, None] - scene.horizon, 1e-3)
    u = (xx - scene.vanish) / s                    # lateral road coordinate
    tracks = np.zeros((h, w), bool)
    for centre in rng.uniform(-1.2, 1.2, 2):
        tracks |= (np.abs(u - centre - 0.35) < 0.12) | (np.abs(u - centre + 0.35) < 0.12)
    cover[road] = np.where(tracks[road], 0.25, rng.uniform(0.75, 0.95))
    cover = np.clip(cover + rng.normal(0, 0.05, cover.shape), 0, 1)[..., None]
    img = img * (1 - cover) + (white + rng.normal(0, 0.03, (h, w, 3))) * cover
    # Haze and flakes.
    t = np.exp(-0.015 * scene.depth)[..., None]
    img = img * t + np.array([0.85, 0.86, 0.88]) * (1 - t)
    flakes = rng.random((h, w)) < rng.uniform(0.01, 0.025)
    flakes |= np.roll(flakes, 1, axis=1) & (rng.random((h, w)) < 0.5)
    img[flakes] = 0.97
    return img + rng.normal(0, 0.01, img.shape)


# Apparent temperature of each class on a mild day, 0 (cold sky) to 1 (skin): sun-warmed asphalt,
# cool vegetation, warm people and engines.
TEMPERATURE = {SKY: 0.02, ROAD: 0.46, SIDEWALK: 0.42, BUILDING: 0.36, WALL: 0.34, FENCE: 0.3, POLE: 0.3, LIGHT: 0.42,
               SIGN: 0.3, VEGETATION: 0.22, TERRAIN: 0.32, PERSON: 0.92, RIDER: 0.88, CAR: 0.6, TRUCK: 0.62,
               BUS: 0.62, BICYCLE: 0.34, EGO: 0.58}


@register("thermal")
def thermal(scene: Scene, rng) -> np.ndarray:
    """A long-wave infrared rendering: intensity from each class's temperature, not its colour;
    engines and lamps hot, windows a little warmer than their walls, the far field pulled toward
    the air's temperature, low contrast, optical blur, column-wise fixed-pattern and temporal
    noise; one channel replicated to three."""
    h, w = scene.label.shape
    t = np.full((h, w), 0.35, np.float32)
    for label, temp in TEMPERATURE.items():
        t[scene.label == label] = temp
    t += (scene.albedo.mean(axis=2) - 0.5) * 0.08                       # emissivity follows the surface a little
    t[scene.windows & (scene.label == BUILDING)] += 0.05
    t += _glow(h, w, scene.lights, {"head", "tail", "lamp"}, 1.2, 2.0)[..., 0] * 0.35
    air = rng.uniform(0.3, 0.4)
    near = np.exp(-0.008 * np.minimum(scene.depth, 300))                  # the far field fades toward the air,
    near[scene.label == SKY] = 1.0                                        # the clear sky stays cold
    t = t * near + air * (1 - near)
    t = 0.5 + (t - t.mean()) * rng.uniform(0.55, 0.7)                    # a narrow dynamic range
    t = _blur(t[..., None], 1)[..., 0]
    t += rng.normal(0, 0.01, (1, w)) + rng.normal(0, 0.02, (h, w))      # column pattern, then temporal noise
    return np.repeat(t[..., None], 3, axis=2)
