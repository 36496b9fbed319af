"""Pictures: palette PNGs of label maps and overlays on the input image."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .labels import IGNORE_INDEX


def palette_image(labels: np.ndarray, palette) -> Image.Image:
    """A mode-P PNG whose pixel values are the class ids (255 = ignore, shown white)."""
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    flat = [0] * 768
    for index, colour in enumerate(palette):
        flat[3 * index:3 * index + 3] = list(colour)
    flat[3 * IGNORE_INDEX:3 * IGNORE_INDEX + 3] = [255, 255, 255]
    image.putpalette(flat)
    return image


def overlay(image: np.ndarray, labels: np.ndarray, palette, alpha: float = 0.5) -> Image.Image:
    """The RGB image blended with the class colours (ignored pixels left as they are)."""
    colours = np.zeros((256, 3), dtype=np.float32)
    colours[: len(palette)] = np.asarray(palette, dtype=np.float32)
    coloured = colours[labels]
    blend = image.astype(np.float32) * (1 - alpha) + coloured * alpha
    keep = labels == IGNORE_INDEX
    blend[keep] = image[keep]
    return Image.fromarray(np.clip(blend + 0.5, 0, 255).astype(np.uint8))
