"""Drawing demo scenes to images: the shape polygons, the background and clutter, the renderer.

Images are rendered at 4x with PIL polygons and downsampled with a box filter (anti-aliasing),
over a noisy background with faint clutter strokes. ``contact_sheet`` tiles rendered images with
their captions for eyeballing. What is drawn comes from ``world`` (a ``Scene``); the randomness of
the background, the clutter and the noise comes from the caller's generator, so an image is fixed
by its scene and its item generator (see :func:`taidpt.utils.seeding.demo_item_rng`).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .world import Scene, SceneObject

__all__ = ["render_scene", "contact_sheet"]

_SUPERSAMPLE = 4


def _regular(n: int, radius: float = 1.0, start_deg: float = -90.0) -> np.ndarray:
    t = np.deg2rad(start_deg) + 2.0 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


def _star() -> np.ndarray:
    outer = _regular(5, 1.0)
    inner = _regular(5, 0.42, -90.0 + 36.0)
    pts = np.empty((10, 2))
    pts[0::2], pts[1::2] = outer, inner
    return pts + np.array([0.0, 0.08])


def _heart() -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, 48, endpoint=False)
    x = 16.0 * np.sin(t) ** 3
    y = -(13.0 * np.cos(t) - 5.0 * np.cos(2 * t) - 2.0 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y + 2.5], axis=1) / 16.5


def _moon() -> np.ndarray:
    # Circle A (centre 0, radius 1) minus circle B (centre (d, 0), radius rb).
    d, rb = 0.45, 0.85
    x = (1.0 - rb * rb + d * d) / (2.0 * d)
    y = math.sqrt(1.0 - x * x)
    phi, psi = math.atan2(y, x), math.atan2(y, x - d)
    outer_t = np.linspace(phi, 2.0 * np.pi - phi, 28)
    inner_t = np.linspace(2.0 * np.pi - psi, psi, 20)
    outer = np.stack([np.cos(outer_t), np.sin(outer_t)], axis=1)
    inner = np.stack([d + rb * np.cos(inner_t), rb * np.sin(inner_t)], axis=1)
    return np.concatenate([outer, inner[1:-1]]) + np.array([0.3, 0.0])


def _semicircle() -> np.ndarray:
    t = np.linspace(np.pi, 2.0 * np.pi, 25)
    return np.stack([np.cos(t), np.sin(t) + 0.42], axis=1)


def _frame_quads() -> list[np.ndarray]:
    outer = np.array([[-0.9, -0.9], [0.9, -0.9], [0.9, 0.9], [-0.9, 0.9]])
    inner = outer * 0.6
    return [np.array([outer[k], outer[(k + 1) % 4], inner[(k + 1) % 4], inner[k]]) for k in range(4)]


# Polygons of every shape in unit coordinates (radius ~1, y pointing down). Circle and ring are
# drawn as ellipses.
_POLYGONS: dict[str, list[np.ndarray]] = {
    "square": [np.array([[-0.82, -0.82], [0.82, -0.82], [0.82, 0.82], [-0.82, 0.82]])],
    "triangle": [_regular(3, 1.1) + np.array([0.0, 0.2])],
    "star": [_star()],
    "cross": [np.array([[-0.3, -1], [0.3, -1], [0.3, -0.3], [1, -0.3], [1, 0.3], [0.3, 0.3],
                        [0.3, 1], [-0.3, 1], [-0.3, 0.3], [-1, 0.3], [-1, -0.3], [-0.3, -0.3]])],
    "heart": [_heart()],
    "diamond": [np.array([[0.0, -1.05], [0.62, 0.0], [0.0, 1.05], [-0.62, 0.0]])],
    "hexagon": [_regular(6, 0.95, 0.0)],
    "arrow": [np.array([[-1.0, -0.22], [0.15, -0.22], [0.15, -0.62], [1.0, 0.0],
                        [0.15, 0.62], [0.15, 0.22], [-1.0, 0.22]])],
    "moon": [_moon()],
    "bar": [np.array([[-1.05, -0.27], [1.05, -0.27], [1.05, 0.27], [-1.05, 0.27]])],
    "frame": _frame_quads(),
    "semicircle": [_semicircle()],
}
_RING_INNER = 0.58


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, float]:
    """A smooth float32 [size, size, 3] background (tinted dark-to-mid grey plus a gradient) and
    the standard deviation of the per-pixel noise that ``render_scene`` adds to it."""
    base = rng.uniform(25.0, 100.0) + rng.uniform(-12.0, 12.0, size=3)
    gx, gy = rng.uniform(-25.0, 25.0, size=2)
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    grad = gx * ramp[None, :] + gy * ramp[:, None]
    return base.astype(np.float32)[None, None, :] + grad[:, :, None], float(rng.uniform(4.0, 12.0))


def _draw_clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, big: int, scale: int) -> None:
    """Two to four faint, thin zig-zag strokes: texture that is not any class shape."""
    for _ in range(int(rng.integers(2, 5))):
        n_pts = int(rng.integers(3, 5))
        start = rng.uniform(0.0, big, size=2)
        steps = rng.normal(0.0, big * 0.18, size=(n_pts - 1, 2))
        pts = np.concatenate([start[None], start[None] + np.cumsum(steps, axis=0)])
        grey = int(rng.integers(90, 230))
        alpha = int(rng.integers(35, 85))
        value = grey * alpha // 255  # the layer holds premultiplied colour
        draw.line([tuple(p) for p in pts.tolist()], fill=(value, value, value, alpha), width=scale)


def _draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject, big: int) -> None:
    r = obj.size * big
    cx, cy = obj.cx * big, obj.cy * big
    fill = (*obj.rgb, 255)
    if obj.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        return
    if obj.shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fill,
                     width=max(1, int(round(r * (1.0 - _RING_INNER)))))
        return
    a = math.radians(obj.angle)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) * r
    for poly in _POLYGONS[obj.shape]:
        pts = poly @ rot.T + np.array([cx, cy])
        draw.polygon([tuple(p) for p in pts.tolist()], fill=fill)


def render_scene(scene: Scene, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """Render ``scene`` as an RGB image of ``size`` x ``size`` pixels.

    Clutter and objects are drawn at 4x resolution on a premultiplied-alpha layer (PIL mode
    "RGBa", so a box reduction averages colour and coverage correctly and edges come out
    anti-aliased), then composited over the background. Per-pixel Gaussian noise is strong on
    the background and weak (sensor-like) on objects. ``rng`` drives the background, the
    clutter and the noise.
    """
    big = size * _SUPERSAMPLE
    bg, bg_sigma = _background(rng, size)
    layer = Image.new("RGBa", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    _draw_clutter(draw, rng, big, _SUPERSAMPLE)
    for obj in scene.objects:
        _draw_object(draw, obj, big)
    small = np.asarray(layer.reduce(_SUPERSAMPLE), dtype=np.float32)
    alpha = small[:, :, 3:4] * np.float32(1.0 / 255.0)
    sigma = np.float32(bg_sigma) + np.float32(3.0 - bg_sigma) * alpha
    out = bg * (1.0 - alpha) + small[:, :, :3]
    out += rng.standard_normal(out.shape, dtype=np.float32) * sigma
    out += 0.5
    np.clip(out, 0.0, 255.0, out=out)
    return Image.fromarray(out.astype(np.uint8), "RGB")


def contact_sheet(images: np.ndarray | Sequence[Image.Image], captions: Sequence[str],
                  cols: int = 4, scale: int = 3, text_lines: int = 4) -> Image.Image:
    """A grid of images (upscaled by ``scale``) with their wrapped captions, for eyeballing."""
    import textwrap

    tiles = [im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im)) for im in images]
    if not tiles:
        raise ValueError("no images")
    w, h = tiles[0].width * scale, tiles[0].height * scale
    line_h, text_w = 11, max(24, w // 6)
    cell_w, cell_h = w + 8, h + 6 + line_h * text_lines
    rows = (len(tiles) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * cell_w, rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, (tile, cap) in enumerate(zip(tiles, captions)):
        x, y = (k % cols) * cell_w + 4, (k // cols) * cell_h + 2
        sheet.paste(tile.resize((w, h), Image.Resampling.NEAREST), (x, y))
        for j, line in enumerate(textwrap.wrap(cap, text_w)[:text_lines]):
            draw.text((x, y + h + 2 + j * line_h), line, fill=(0, 0, 0))
    return sheet
