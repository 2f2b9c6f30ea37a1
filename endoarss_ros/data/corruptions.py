"""Image corruptions of uint8 RGB frames, severity 1..3, seeded (so a report is reproducible): the robustness
evaluation (``training.robustness``) and the status evaluation (``tools.eval_status``) apply the same ones.

* ``gaussian_noise``: additive N(0, sigma), sigma = 8 / 16 / 28 grey levels;
* ``gaussian_blur``:  Gaussian blur, sigma = 1 / 2 / 3.5 pixels at 224-px scale (scaled with the frame);
* ``jpeg``:           JPEG re-encoding at quality 40 / 20 / 8;
* ``smoke``:          a smooth grey-white haze blended in at up to 35 / 55 / 75 % opacity, plus a slight blur;
* ``blood``:          dark-red blobs (blood pooling / stains on the lens) covering about 5 / 10 / 18 %.
"""
from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


def gaussian_noise(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    sigma = (8.0, 16.0, 28.0)[severity - 1]
    noisy = img.astype(np.float32) + rng.standard_normal(img.shape, dtype=np.float32) * sigma
    return np.clip(noisy, 0, 255).astype(np.uint8)


def gaussian_blur(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    sigma = (1.0, 2.0, 3.5)[severity - 1] * min(img.shape[:2]) / 224
    return cv2.GaussianBlur(img, (0, 0), sigma)


def jpeg(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    quality = (40, 20, 8)[severity - 1]
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _blobs(rng: np.random.Generator, shape: tuple[int, int], lo: int = 4) -> np.ndarray:
    """Smooth noise in [0, 1] with ``lo`` blobs across."""
    grid = rng.random((lo, lo)).astype(np.float32)
    field = cv2.resize(grid, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return np.clip(field, 0, 1)


def smoke(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    opacity = (0.35, 0.55, 0.75)[severity - 1]
    h, w = img.shape[:2]
    alpha = (_blobs(rng, (h, w)) * opacity)[..., None]
    haze = np.full_like(img, 0, np.float32) + np.array([225, 222, 218], np.float32)
    out = img.astype(np.float32) * (1 - alpha) + haze * alpha
    out = cv2.GaussianBlur(out, (0, 0), 0.5 + severity * 0.4 * min(h, w) / 224)
    return np.clip(out, 0, 255).astype(np.uint8)


def blood(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    coverage = (0.05, 0.10, 0.18)[severity - 1]
    h, w = img.shape[:2]
    field = _blobs(rng, (h, w), lo=6)
    thresh = np.quantile(field, 1 - coverage)
    alpha = np.clip((field - thresh) / 0.03, 0, 1)[..., None] * 0.9
    colour = np.array([110, 8, 12], np.float32) * (0.7 + 0.3 * _blobs(rng, (h, w), lo=12))[..., None]
    out = img.astype(np.float32) * (1 - alpha) + colour * alpha
    return np.clip(out, 0, 255).astype(np.uint8)


CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise,
    "gaussian_blur": gaussian_blur,
    "jpeg": jpeg,
    "smoke": smoke,
    "blood": blood,
}
SEVERITIES = (1, 2, 3)
