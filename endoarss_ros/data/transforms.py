"""Augmentations on numpy arrays: ``t(image, mask, rng) -> (image, mask)``.

``image`` is uint8 HxWx3 RGB, ``mask`` uint8/int HxW class ids; geometric transforms move both the
same way (mask with nearest neighbour), photometric ones touch the image only. All randomness
comes from the ``np.random.Generator`` passed in, so a seeded generator reproduces a pipeline.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

Rng = np.random.Generator


class Compose:
    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: Rng) -> tuple[np.ndarray, np.ndarray]:
        for t in self.transforms:
            image, mask = t(image, mask, rng)
        return image, mask


@dataclass
class RandomFlip:
    horizontal: float = 0.5  # probability of a left-right flip
    vertical: float = 0.0  # endoscope images have no canonical "up", so vertical flips are fair too

    def __call__(self, image, mask, rng: Rng):
        if rng.random() < self.horizontal:
            image, mask = image[:, ::-1], mask[:, ::-1]
        if rng.random() < self.vertical:
            image, mask = image[::-1], mask[::-1]
        return np.ascontiguousarray(image), np.ascontiguousarray(mask)


@dataclass
class RandomScaleCrop:
    """Zoom in by a random factor and crop back to the input size at a random position."""

    scale: tuple[float, float] = (1.0, 1.5)
    p: float = 0.5

    def __call__(self, image, mask, rng: Rng):
        if rng.random() >= self.p:
            return image, mask
        h, w = mask.shape[:2]
        s = rng.uniform(*self.scale)
        sh, sw = max(h, round(h * s)), max(w, round(w * s))
        y0, x0 = int(rng.integers(0, sh - h + 1)), int(rng.integers(0, sw - w + 1))
        image = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_LINEAR)[y0:y0 + h, x0:x0 + w]
        mask = cv2.resize(mask, (sw, sh), interpolation=cv2.INTER_NEAREST_EXACT)[y0:y0 + h, x0:x0 + w]
        return np.ascontiguousarray(image), np.ascontiguousarray(mask)


@dataclass
class ColorJitter:
    """Brightness, contrast, saturation (multiplicative) and hue (degrees) jitter; image only."""

    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 5.0

    def __call__(self, image, mask, rng: Rng):
        img = image.astype(np.float32)
        img *= rng.uniform(1 - self.brightness, 1 + self.brightness)
        mean = img.mean()
        img = (img - mean) * rng.uniform(1 - self.contrast, 1 + self.contrast) + mean
        hsv = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
        hsv[..., 1] *= rng.uniform(1 - self.saturation, 1 + self.saturation)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-self.hue, self.hue) / 2) % 180  # OpenCV hue is 0..179
        hsv = np.clip(hsv, 0, [179, 255, 255]).astype(np.uint8)
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), mask


@dataclass
class BlurNoise:
    """Gaussian blur (defocus, smoke) and Gaussian sensor noise; image only."""

    blur_p: float = 0.3
    max_sigma: float = 1.5
    noise_p: float = 0.3
    max_noise: float = 8.0  # standard deviation in grey levels

    def __call__(self, image, mask, rng: Rng):
        if rng.random() < self.blur_p:
            image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, self.max_sigma))
        if rng.random() < self.noise_p:
            noise = rng.standard_normal(image.shape, dtype=np.float32) * rng.uniform(0, self.max_noise)
            image = np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
        return image, mask


def train_transforms(vertical_flip: float = 0.5) -> Compose:
    """Default training augmentation (the released code trains without any)."""
    return Compose([RandomFlip(0.5, vertical_flip), RandomScaleCrop(), ColorJitter(), BlurNoise()])
