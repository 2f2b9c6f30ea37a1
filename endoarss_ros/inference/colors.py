"""Overlay colours per segmentation class."""
from __future__ import annotations

import colorsys

import numpy as np

from endoarss_ros.data.classes import MTLESD


def default_colors(num_classes: int) -> np.ndarray:
    """``(C, 3)`` uint8 RGB: class 0 (background) black, the others evenly spaced saturated hues."""
    out = np.zeros((num_classes, 3), np.uint8)
    n = max(num_classes - 1, 1)
    for i in range(1, num_classes):
        r, g, b = colorsys.hsv_to_rgb(((i - 1) / n) % 1.0, 0.85, 0.95)
        out[i] = (round(r * 255), round(g * 255), round(b * 255))
    return out


def class_colors(seg_classes: list[str]) -> np.ndarray:
    """The MTLESD colours when the model has the MTLESD classes, else ``default_colors``."""
    if list(MTLESD.seg_classes) == list(seg_classes):
        return np.asarray(MTLESD.seg_colors, dtype=np.uint8).reshape(-1, 3)
    return default_colors(len(seg_classes))
