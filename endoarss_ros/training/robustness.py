"""Robustness evaluation: metrics under image corruptions (``data.corruptions``: noise, blur, JPEG, smoke, blood,
severity 1..3, seeded) and the drop from the clean score.

Masks are left unchanged: the question is how much the prediction of the *same* scene degrades.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from endoarss_ros.data.corruptions import CORRUPTIONS, SEVERITIES
from endoarss_ros.metrics.tracker import summary

from .evaluation import evaluate

__all__ = ["CORRUPTIONS", "SEVERITIES", "corrupt_batch", "evaluate_robustness", "format_robustness"]


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
