"""Robustness evaluation: metrics under image corruptions and the drop from the clean score.

Corruptions act on uint8 RGB frames (severity 1..3, seeded, so a report is reproducible):

* ``gaussian_noise``: additive N(0, sigma), sigma = 8 / 16 / 28 grey levels;
* ``gaussian_blur``:  Gaussian blur, sigma = 1 / 2 / 3.5 pixels at 224-px scale (scaled with the frame);
* ``jpeg``:           JPEG re-encoding at quality 40 / 20 / 8;
* ``smoke``:          a smooth grey-white haze blended in at up to 35 / 55 / 75 % opacity, plus a slight blur;
* ``blood``:          dark-red blobs (blood pooling / stains on the lens) covering about 5 / 10 / 18 %.

Masks are left unchanged: the question is how much the prediction of the *same* scene degrades.
"""
from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch

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


def corrupt_batch(name: str, severity: int, seed: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """An ``image_fn`` for ``evaluate``: corrupts a (B, 3, H, W) float batch in [0, 1] via uint8."""
    fn = CORRUPTIONS[name]
    rng = np.random.default_rng([seed, severity, list(CORRUPTIONS).index(name)])

    def apply(images: torch.Tensor) -> torch.Tensor:
        arr = (images.permute(0, 2, 3, 1).cpu().numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
        out = np.stack([fn(a, severity, rng) for a in arr])
        return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)

    return apply


def evaluate_robustness(model, dataset, *, corruptions=None, severities=SEVERITIES, seed: int = 0,
                        clean: dict | None = None, **eval_kwargs) -> dict:
    """Clean metrics, metrics per corruption and severity, and the drop (clean - corrupted) per corruption.

    The drop per corruption is averaged over severities, for activity accuracy and foreground mIoU.
    """
    from .loop import evaluate
    from .metrics import summary

    if clean is None:
        clean = evaluate(model, dataset, **eval_kwargs)
    base = summary(clean)
    out: dict = {"clean": base, "corruptions": {}}
    for name in corruptions or list(CORRUPTIONS):
        per_sev = {}
        for s in severities:
            res = evaluate(model, dataset, image_fn=corrupt_batch(name, s, seed), **eval_kwargs)
            per_sev[str(s)] = summary(res)
        acc = float(np.mean([v["activity_accuracy"] for v in per_sev.values()]))
        miou = float(np.mean([v["miou_fg"] for v in per_sev.values()]))
        out["corruptions"][name] = {
            "severities": per_sev,
            "activity_accuracy": acc,
            "miou_fg": miou,
            "drop": {"activity_accuracy": base["activity_accuracy"] - acc, "miou_fg": base["miou_fg"] - miou},
        }
    return out


def format_robustness(report: dict) -> str:
    c = report["clean"]
    lines = [f"Robustness (mean over severities {', '.join(next(iter(report['corruptions'].values()))['severities'])})"
             if report["corruptions"] else "Robustness",
             f"  {'corruption':<16}{'act acc':>9}{'drop':>9}{'mIoU fg':>9}{'drop':>9}",
             f"  {'clean':<16}{c['activity_accuracy']:>9.4f}{'':>9}{c['miou_fg']:>9.4f}{'':>9}"]
    for name, r in report["corruptions"].items():
        d = r["drop"]
        lines.append(f"  {name:<16}{r['activity_accuracy']:>9.4f}{d['activity_accuracy']:>+9.4f}"
                     f"{r['miou_fg']:>9.4f}{d['miou_fg']:>+9.4f}")
    return "\n".join(lines)
