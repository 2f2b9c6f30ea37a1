"""``endoarss bench``'s input frames: synthetic endoscope scenes, the ``bands`` stress pattern and uniform noise,
as ``sensor_msgs/Image``-style message bytes; also the instrument mask of the status + instruments stage.
The over-ROS measurement (``bench_ros``) publishes the same scenes."""
from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from endoarss_ros.data.synth import generate_frame
from endoarss_ros.inference.frames import ENCODINGS

SCENES = ("esd", "bands", "noise")
SceneFn = Callable[[int, int, int], np.ndarray]  # (seed, H, W) -> uint8 RGB


def esd_scene(seed: int, H: int, W: int) -> np.ndarray:
    """A synthetic endoscope frame (uint8 RGB), for ``--scene esd``."""
    return generate_frame(seed, seed % 3, (H, W))[0]


def noise_scene(seed: int, H: int, W: int) -> np.ndarray:
    """Uniform noise (uint8 RGB): a stress case (the model's masks are fragmented everywhere), ``--scene noise``."""
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


class BenchFrames:
    """The benchmark's input frames as message bytes ``(data, step)``, made once per size and encoding.

    ``esd``: synthetic endoscope scenes (tissue, instruments, marks; ``esd_scene``); ``bands``: an analytic
    pattern of colour bands and salt noise, far more class boundaries than a surgical scene (a stress case for
    the ``logits`` upsample, whose cost follows them); ``noise``: uniform noise (``noise_scene``)."""

    def __init__(self, scene: str, scene_fn: SceneFn = esd_scene, n: int = 4):
        if scene not in SCENES:
            raise ValueError(f"--scene: unknown scene {scene!r} ({', '.join(SCENES)})")
        self.scene, self.scene_fn, self.n = scene, scene_fn, n
        self._cache: dict = {}

    def get(self, W: int, H: int, encoding: str) -> list[tuple[bytes, int]]:
        key = (W, H, encoding)
        if key not in self._cache:
            self._cache[key] = [self._one(W, H, encoding, k) for k in range(self.n)]
        return self._cache[key]

    def _one(self, W, H, encoding, k) -> tuple[bytes, int]:
        C = ENCODINGS[encoding]
        if self.scene == "bands":
            rng = np.random.default_rng(k)
            yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
            img = np.empty((H, W, C), np.uint8)
            for c in range(C):
                img[:, :, c] = ((xx * (c + 1) + yy * (k + 1)) / (W + H) * 255).astype(np.uint8)
            img[rng.integers(0, H, 500), rng.integers(0, W, 500)] = 255
            return img.tobytes(), W * C
        rgb = noise_scene(k, H, W) if self.scene == "noise" else self.scene_fn(k, H, W)
        codes = {"rgb8": None, "bgr8": cv2.COLOR_RGB2BGR, "rgba8": cv2.COLOR_RGB2RGBA, "bgra8": cv2.COLOR_RGB2BGRA,
                 "mono8": cv2.COLOR_RGB2GRAY}
        if encoding not in codes:
            raise ValueError(f"--scene {self.scene} has no {encoding} frames: use --scene bands for YUV encodings")
        img = rgb if codes[encoding] is None else cv2.cvtColor(rgb, codes[encoding])
        return np.ascontiguousarray(img).tobytes(), W * C


def instrument_mask(H: int, W: int) -> np.ndarray:
    """A class mask with two instruments crossing near the centre (MTLESD ids: forceps 1, knife 3) and a flap."""

    mask = np.zeros((H, W), np.uint8)
    u = min(H, W)
    cv2.ellipse(mask, (W // 2, H // 2 - u // 6), (u // 5, u // 10), 0, 0, 360, 2, -1)
    cv2.line(mask, (W // 2 - u // 2, H), (W // 2 + u // 10, H // 2), 1, max(1, u // 12))
    cv2.line(mask, (W // 2 + u // 2, H), (W // 2 - u // 8, H // 2 - u // 20), 3, max(1, u // 14))
    return mask
