"""The demo weights' evaluation report (``models/demo/eval_report.json``).

Two synthetic test sets, both generated with seeds the training never used:

* ``test``: ``count`` single frames from the ``test`` seed stream of ``seed``, rendered at ``render_size``
  and INTER_AREA-shrunk to the model's input size (``endoarss eval WEIGHTS --synthetic-seed SEED
  --count COUNT --render-size RENDER`` evaluates exactly these frames);
* ``full_resolution``: frames of ``generate_sequence(seq_seed, ...)`` rendered at 640x512 (W x H, the
  synthetic bag's aspect) and shrunk with INTER_AREA to the input size, as the ROS node does.

Run: ``python -m endoarss_ros.tools.evaluation.eval_report models/demo/endoarss_demo.safetensors
--out models/demo/eval_report.json``. ``test/test_training_demo_weights.py`` re-runs the ``test`` part.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from endoarss_ros.data.datasets import resize_pair
from endoarss_ros.data.synth import generate_sequence
from endoarss_ros.metrics.tracker import format_table, summary
from endoarss_ros.model import load_model
from endoarss_ros.training.config import DataConfig, SyntheticConfig
from endoarss_ros.training.data import build_split
from endoarss_ros.training.evaluation import evaluate


def synthetic_test_set(seed: int, count: int, render_size: int, size: tuple[int, int]) -> Dataset:
    cfg = DataConfig(layout="synthetic", synthetic=SyntheticConfig(seed=seed, test_seed=seed, test=count,
                                                                    render_size=render_size, wide_every=0))
    return build_split(cfg, "test", size)


class SequenceFrames(Dataset):
    """Frames of a synthetic sequence at ``render_hw``, shrunk to ``size`` (image INTER_AREA, mask nearest)."""

    def __init__(self, seed: int, num_frames: int, fps: float, render_hw: tuple[int, int], size: tuple[int, int]):

        self.items = []
        for fr in generate_sequence(seed, num_frames, fps=fps, size=render_hw):
            img, mask = resize_pair(fr.rgb, fr.mask, size)
            self.items.append((img, mask, fr.activity))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        img, mask, act = self.items[i]
        return {"image": torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0),
                "mask": torch.from_numpy(mask.astype(np.int64)), "activity": torch.tensor(act),
                "path": f"sequence:{i}"}


def timing(model, size: tuple[int, int], frames: int = 20, source_hw: tuple[int, int] = (1080, 1920)) -> dict:
    """Mean seconds per frame: INTER_AREA shrink of a 1080p frame + forward + argmax (batch 1)."""
    src = np.random.default_rng(0).integers(0, 255, (*source_hw, 3), dtype=np.uint8)
    times = []
    with torch.no_grad():
        for i in range(frames + 3):
            t = time.perf_counter()
            small = cv2.resize(src, (size[1], size[0]), interpolation=cv2.INTER_AREA)
            x = torch.from_numpy(small).permute(2, 0, 1)[None].float().div_(255.0)
            out = model.forward_low_res(x)
            out.segmentation.argmax(1)
            out.activity.argmax(1)
            if i >= 3:
                times.append(time.perf_counter() - t)
    return {"source": f"{source_hw[1]}x{source_hw[0]}", "threads": torch.get_num_threads(),
            "mean_s": float(np.mean(times)), "median_s": float(np.median(times)),
            "fps_median": float(1 / np.median(times))}


def build_report(weights: str | Path, *, seed: int = 1000, count: int = 150, render_size: int = 336,
                 seq_seed: int = 2000, seq_frames: int = 90, seq_fps: float = 3.0, with_timing: bool = True) -> dict:

    model = load_model(weights)
    size = tuple(model.config.input_size)
    test = evaluate(model, synthetic_test_set(seed, count, render_size, size), batch_size=30)
    report = {
        "weights": Path(weights).name,
        "test_set": {"generator": "endoarss_ros.tools.evaluation.eval_report.synthetic_test_set", "seed": seed,
                     "split": "test", "count": count, "render_size": render_size, "size": list(size),
                     "note": "seed stream split_seed(seed, 'test'); not a train/val stream (those used seeds 0-3)"},
        "background_included": {"miou_fg": False, "miou_all": True},
        "summary": summary(test),
        "metrics": test,
    }
    seq = SequenceFrames(seq_seed, seq_frames, seq_fps, (512, 640), size)
    full = evaluate(model, seq, batch_size=30)
    report["full_resolution"] = {
        "frames": f"generate_sequence(seed={seq_seed}, num_frames={seq_frames}, fps={seq_fps}, size=(512, 640)) "
                  f"-> INTER_AREA to {size[1]}x{size[0]}",
        "summary": summary(full), "iou": full["segmentation"]["iou"],
        "activity_confusion_matrix": full["activity"]["confusion_matrix"],
    }
    if with_timing:
        report["timing_1080p"] = timing(model, size)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("weights")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--count", type=int, default=150)
    p.add_argument("--render-size", type=int, default=336)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    rep = build_report(a.weights, seed=a.seed, count=a.count, render_size=a.render_size)
    rep["date"] = time.strftime("%Y-%m-%d")
    Path(a.out).write_text(json.dumps(rep, indent=1))
    print(format_table(rep["metrics"]))
    print("full resolution:", json.dumps(rep["full_resolution"]["summary"]))
    if "timing_1080p" in rep:
        print("timing:", json.dumps(rep["timing_1080p"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
