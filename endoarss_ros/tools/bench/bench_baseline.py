"""``endoarss bench``'s naive baseline: the released pipeline (full frame to float on the CPU, CPU resize, fp32
eager model with unmerged adapters, logits upsampled to full resolution and argmax on the CPU), timed on the same
frames as the engine."""
from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F

from endoarss_ros.inference.frames import frame_from_image_fields
from endoarss_ros.inference.preprocess import cv2_full_rgb
from endoarss_ros.tools.bench.bench_frames import BenchFrames
from endoarss_ros.tools.bench.bench_timing import pct, sync


class NaiveBaseline:
    """The released pipeline: CPU float of the full frame, CPU resize, fp32 eager, CPU upsample + argmax."""

    def __init__(self, model, device: torch.device):
        self.model = model.to(device).eval()
        self.device = device
        self.size = tuple(model.config.input_size)
        self.ac = bool(model.config.resize_align_corners)

    @torch.no_grad()
    def infer(self, frame):
        rgb = cv2_full_rgb(frame)  # colour conversion as the released code does it (cv2 on the CPU)
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0  # full-resolution float on the CPU
        x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=self.ac)
        x = x.to(self.device)
        out = self.model(x, output_size=None)
        seg = out.segmentation.float().cpu()
        seg = F.interpolate(seg, size=frame.size, mode="bilinear", align_corners=self.ac)
        mask = seg.argmax(dim=1)[0].to(torch.uint8).numpy()
        probs = torch.softmax(out.activity.float().cpu(), dim=-1)[0].numpy()
        return mask, probs


def measure_baseline(model, mname, W, H, args, device, cache: dict, source: BenchFrames) -> dict:
    """Naive pipeline p50/p95 per frame and its mask of the first frame, once per model x size."""
    key = (mname, W, H, source.scene)
    if key not in cache:
        data = source.get(W, H, args.encoding)
        base = NaiveBaseline(copy.deepcopy(model), device)
        frames = [frame_from_image_fields(args.encoding, W, H, s, d) for d, s in data]
        base.infer(frames[0])
        times = []
        for i in range(max(1, args.baseline_frames)):
            ts = time.perf_counter()
            d, s = data[i % len(data)]
            mask, probs = base.infer(frame_from_image_fields(args.encoding, W, H, s, d))
            _ = (mask.tobytes(), [float(p) for p in probs])
            sync(device)
            times.append(time.perf_counter() - ts)
        cache[key] = {"p50_ms": pct(times, 50), "p95_ms": pct(times, 95), "frames": len(times),
                      "mask": base.infer(frames[0])[0]}
    return cache[key]
