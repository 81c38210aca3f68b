"""Pictures: the row-normalised confusion matrix, contact sheets."""
from __future__ import annotations

import numpy as np


def confusion_png(path, counts: np.ndarray, names, cell: int = 22) -> None:
    """Row-normalised confusion matrix as a PNG: rows = ground truth, columns = prediction
    (the last column, 'ign', = predicted as ignore)."""
    from PIL import Image, ImageDraw

    c = counts.shape[0]
    rows = counts.sum(1, keepdims=True).astype(np.float64)
    norm = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    margin_l, margin_t = 110, 40
    w, h = margin_l + cell * counts.shape[1] + 10, margin_t + cell * c + 10
    im = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(im)
    for i in range(c):
        d.text((4, margin_t + i * cell + 5), str(names[i])[:16], fill="black")
        for j in range(counts.shape[1]):
            v = norm[i, j]
            shade = int(255 * (1 - v))
            box = [margin_l + j * cell, margin_t + i * cell, margin_l + (j + 1) * cell - 1, margin_t + (i + 1) * cell - 1]
            d.rectangle(box, fill=(shade, shade, 255) if i != j else (shade, 255, shade))
            if v >= 0.1:
                d.text((box[0] + 2, box[1] + 5), f"{int(round(v * 100))}", fill="white" if v > 0.5 else "black")
    for j in range(counts.shape[1]):
        d.text((margin_l + j * cell + 4, margin_t - 16), "ign" if j == c else str(j), fill="black")
    d.text((margin_l, 4), "ground truth (rows) vs prediction (columns), % of row", fill="black")
    im.save(path, format="PNG")


def contact_sheet(path, rows, palette_name: str = "cityscapes") -> None:
    """One row per item ``(key, source, label, *translations)``: source | label colours | each
    translation, all scaled to the first translation's size."""
    from PIL import Image, ImageDraw

    from ..diffusion.layout import palette, resize_image

    lut = palette(palette_name)
    tiles = []
    for key, src, label, *outs in rows:
        h, w = outs[0].shape[:2]
        src = resize_image(src, (h, w)) if src is not None else np.zeros_like(outs[0])
        tiles.append(np.concatenate([src, lut[label], *outs], 1))
    sheet = Image.fromarray(np.concatenate(tiles, 0))
    d = ImageDraw.Draw(sheet)
    y = 0
    for (key, *_), tile in zip(rows, tiles):
        d.text((3, y + 2), str(key), fill="white")
        y += tile.shape[0]
    sheet.save(path, format="PNG")
