"""``endoarss eval-status``: evidence that PerceptionStatus and InstrumentArray mean something.

Three measurements on held-out synthetic frames (seeds unused by training: ``np.random.default_rng([seed, i])``,
activity ``i % 3``), written as JSON and summarised in docs/perception_status.md:

1. degraded-image detection: every clean frame (rendered without the scene's own smoke and blood) under each
   robustness corruption (``data.corruptions``) at each severity, plus three exposure / content conditions
   (``EXTRA_CONDITIONS``); per condition, the fraction of frames with any image-quality flag ("detected") and
   with the flag that names the corruption ("named"); false alarms: clean frames with any image flag. The
   renderer's own smoky and bloody scenes are reported apart (they are degraded by design);
2. usable vs unusable: the same frames through the model (``--model``, default the demo weights) and the
   full status (image flags + LOW_CONFIDENCE); activity accuracy and foreground mIoU of the frames marked
   usable and of those marked unusable;
3. instrument geometry against the renderer's ground truth (``data.render.InstrumentTruth``): from the true masks
   (random frames), tip and entry-point error as a fraction of the image diagonal; with the model's masks on
   rendered sequences (tracking on), median tip error, box IoU, detection rate and id switches per minute.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from endoarss_ros.inference.status import FLAG, IMAGE_FLAGS, StatusThresholds, frame_status

NAMED_FLAG = {"gaussian_noise": "NOISE", "gaussian_blur": "BLUR", "jpeg": "COMPRESSION_ARTIFACTS",
              "smoke": "SMOKE_OR_HAZE", "blood": "BLOOD_OR_SOILING", "dark": "TOO_DARK",
              "overexposed": "OVER_EXPOSED", "no_tissue": "NO_TISSUE"}


def _dark(img, rng):
    return (img.astype(np.float32) * 0.2).astype(np.uint8)


def _overexposed(img, rng):
    return np.clip(img.astype(np.float32) * 2.2 + 40, 0, 255).astype(np.uint8)


def _no_tissue(img, rng):
    """The scope out of the body / against the drapes: the same layout, without tissue colour (grey-blue)."""
    grey = img.astype(np.float32).mean(axis=2, keepdims=True)
    return np.clip(grey * np.array([0.9, 1.0, 1.1], np.float32), 0, 255).astype(np.uint8)


EXTRA_CONDITIONS = {"dark": _dark, "overexposed": _overexposed, "no_tissue": _no_tissue}


@dataclass
class EvalSettings:
    seed: int = 5000
    frames: int = 200
    size: tuple[int, int] = (512, 640)  # (H, W)
    geometry_frames: int = 400
    sequences: int = 3
    sequence_seconds: float = 20.0
    fps: float = 10.0
    model: str | None = None  # None: the demo weights
    device: str = "cpu"
    thresholds: StatusThresholds = field(default_factory=StatusThresholds)


def clean_frames(seed: int, n: int, size, **options):
    """(rgb, mask, activity, instruments) of ``n`` held-out frames, without the scene's own smoke and blood
    unless ``options`` say otherwise."""
    from endoarss_ros.data.synth import generate_frame

    options = {"smoke": False, "blood": False, **options}
    for i in range(n):
        rgb, mask, truth = generate_frame(np.random.default_rng([seed, i]), i % 3, size, with_truth=True, **options)
        yield rgb, mask, i % 3, truth


def conditions(rgb: np.ndarray, index: int, seed: int):
    """(name, severity, frame) of every condition of one clean frame: clean, each corruption at each severity,
    the extra conditions (severity 0)."""
    from endoarss_ros.data.corruptions import CORRUPTIONS, SEVERITIES

    yield "clean", 0, rgb
    for k, (name, fn) in enumerate(CORRUPTIONS.items()):
        for s in SEVERITIES:
            yield name, s, fn(rgb, s, np.random.default_rng([seed, index, k, s]))
    for name, fn in EXTRA_CONDITIONS.items():
        yield name, 0, fn(rgb, None)


def image_status(rgb: np.ndarray, thresholds: StatusThresholds, model_measures: dict | None = None):
    from endoarss_ros.inference import quality
    from endoarss_ros.inference.frames import frame_from_array

    measures = quality.measure(frame_from_array(rgb, "rgb8")).as_dict()
    measures.update(model_measures or {})
    return frame_status(measures, thresholds)


def _percentiles(values: dict[str, list[dict]]) -> dict:
    """Per condition and image measure: its 1st, 50th and 99th percentile (what the thresholds were set from)."""
    out = {}
    for key, rows in values.items():
        out[key] = {m: [round(float(np.percentile([r[m] for r in rows], q)), 4) for q in (1, 50, 99)]
                    for m in rows[0] if not math.isnan(rows[0][m])}
    return out


class _Rates:
    """Per condition key: frames, detected (any image flag), named (the condition's own flag)."""

    def __init__(self):
        self.counts: dict[str, list[int]] = {}

    def add(self, key: str, status, named_flag: str | None) -> None:
        c = self.counts.setdefault(key, [0, 0, 0])
        c[0] += 1
        c[1] += bool(status.flags & sum(FLAG[f] for f in IMAGE_FLAGS + ("NO_TISSUE",)))
        c[2] += bool(named_flag and status.flags & FLAG[named_flag])

    def report(self) -> dict:
        return {k: {"frames": n, "detected": round(d / n, 4), "named": round(m / n, 4)}
                for k, (n, d, m) in self.counts.items()}


def degraded_detection(cfg: EvalSettings) -> dict:
    """Measurement 1 (see the module docstring)."""
    rates, clean_flags, measures = _Rates(), {}, {}
    for i, (rgb, _, _, _) in enumerate(clean_frames(cfg.seed, cfg.frames, cfg.size)):
        for name, severity, img in conditions(rgb, i, cfg.seed):
            status = image_status(img, cfg.thresholds)
            key = name if severity == 0 else f"{name}/{severity}"
            rates.add(key, status, NAMED_FLAG.get(name))
            if severity in (0, 3):
                measures.setdefault(key, []).append(status.measures)
            if name == "clean":
                for flag in status.flag_names:
                    clean_flags[flag] = clean_flags.get(flag, 0) + 1
    scene = _Rates()
    for options, key in (({"smoke": True}, "scene_smoke"), ({"blood": True}, "scene_blood")):
        for rgb, _, _, _ in clean_frames(cfg.seed + 1, cfg.frames // 2, cfg.size, **options):
            scene.add(key, image_status(rgb, cfg.thresholds), NAMED_FLAG["smoke" if "smoke" in key else "blood"])
    out = rates.report()
    return {"conditions": out, "clean_false_alarm_rate": out["clean"]["detected"], "clean_flags": clean_flags,
            "scene_degradations": scene.report(), "measure_percentiles": _percentiles(measures)}


class _Scores:
    """Confusion matrices of one group of frames (activity, segmentation)."""

    def __init__(self, num_seg: int, num_act: int):
        self.seg = np.zeros((num_seg, num_seg), np.int64)
        self.act = np.zeros((num_act, num_act), np.int64)

    def add(self, mask: np.ndarray, truth: np.ndarray, activity: int, true_activity: int) -> None:
        n = len(self.seg)
        self.seg += np.bincount(truth.reshape(-1).astype(np.int64) * n + mask.reshape(-1), minlength=n * n
                                ).reshape(n, n)
        self.act[true_activity, activity] += 1

    def report(self, seg_names, act_names) -> dict:
        from endoarss_ros.metrics.frames import classification_metrics, segmentation_metrics

        frames = int(self.act.sum())
        if not frames:
            return {"frames": 0, "activity_accuracy": None, "miou_foreground": None}
        miou = segmentation_metrics(self.seg, list(seg_names))["miou_fg"]
        return {"frames": frames, "activity_accuracy": round(classification_metrics(self.act)["accuracy"], 4),
                "miou_foreground": None if math.isnan(miou) else round(float(miou), 4)}


def _engine(cfg: EvalSettings):
    from endoarss_ros.inference import InferenceEngine, resolve_model_path
    from endoarss_ros.inference.weights_path import DEFAULT_MODEL

    return InferenceEngine(str(resolve_model_path(cfg.model or DEFAULT_MODEL)), device=cfg.device, max_batch=4)


def usable_vs_unusable(cfg: EvalSettings, engine) -> dict:
    """Measurement 2: the model on every condition of every clean frame; scores by the status's verdict."""
    from endoarss_ros.inference.frames import frame_from_array
    from endoarss_ros.inference.status import model_uncertainty

    names, acts = engine.seg_classes, engine.activity_classes
    groups = {k: _Scores(len(names), len(acts)) for k in ("usable", "unusable", "clean", "clean_usable")}
    flagged: dict[str, int] = {}
    for i, (rgb, mask, activity, _) in enumerate(clean_frames(cfg.seed, cfg.frames, cfg.size)):
        variants = list(conditions(rgb, i, cfg.seed))
        results = engine.infer([frame_from_array(img, "rgb8") for _, _, img in variants])
        for (name, _, img), result in zip(variants, results):
            uncertainty = model_uncertainty(result.activity_probs, result.confidence,
                                            cfg.thresholds.pixel_confidence_threshold)
            status = image_status(img, cfg.thresholds, uncertainty)
            predicted = int(np.argmax(result.activity_probs))
            groups["usable" if status.usable else "unusable"].add(result.mask, mask, predicted, activity)
            if name == "clean":
                groups["clean"].add(result.mask, mask, predicted, activity)
                if status.usable:
                    groups["clean_usable"].add(result.mask, mask, predicted, activity)
                for flag in status.flag_names:
                    flagged[flag] = flagged.get(flag, 0) + 1
    out = {k: g.report(names, acts) for k, g in groups.items()}
    out["clean_flags"] = flagged
    return out


def _match(truth, found):
    """The found instrument of the truth's class nearest its tip (None if there is none)."""
    same = [x for x in found if x.class_id == truth.class_id]
    return min(same, key=lambda x: math.dist(x.tip, truth.tip)) if same else None


def geometry_from_truth(cfg: EvalSettings) -> dict:
    """Measurement 3a: the extractor on the renderer's own masks."""
    from endoarss_ros.data.synth import generate_frame
    from endoarss_ros.inference import instruments, quality
    from endoarss_ros.inference.frames import frame_from_array

    h, w = cfg.size
    diag = math.hypot(h, w)
    classes = instruments.resolve_classes((), _mtlesd_names())
    tips, entries, missing = [], [], 0
    for i in range(cfg.geometry_frames):
        rgb, mask, truth = generate_frame(np.random.default_rng([cfg.seed + 2, i]), i % 3, cfg.size, with_truth=True)
        found = instruments.extract(mask, classes, image=quality.analysis_rgb(frame_from_array(rgb, "rgb8")))
        for t in truth:
            m = _match(t, found)
            if m is None:
                missing += 1
                continue
            tips.append(math.dist(m.tip, t.tip) / diag)
            entries.append(math.dist(m.entry, t.entry) / diag)
    tips, entries = np.array(tips), np.array(entries)
    return {"instances": len(tips) + missing, "missing": missing,
            "tip_within_2pct": round(float(np.mean(tips <= 0.02)), 4),
            "entry_within_2pct": round(float(np.mean(entries <= 0.02)), 4),
            "both_within_2pct": round(float(np.mean((tips <= 0.02) & (entries <= 0.02))), 4),
            "tip_error_median_pct": round(float(np.median(tips) * 100), 3),
            "entry_error_median_pct": round(float(np.median(entries) * 100), 3)}


def _mtlesd_names() -> list[str]:
    from endoarss_ros.model.config import MTLESD_SEG_CLASSES

    return list(MTLESD_SEG_CLASSES)


def _box(mask: np.ndarray, class_id: int):
    ys, xs = np.nonzero(mask == class_id)
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if len(xs) else None


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def geometry_with_model(cfg: EvalSettings, engine) -> dict:
    """Measurement 3b: the model's masks on rendered sequences, through the same ``CameraStream`` as the node."""
    from endoarss_ros.data.synth import generate_sequence
    from endoarss_ros.inference.frames import frame_from_array
    from endoarss_ros.inference.stream import CameraStream, StreamSettings

    h, w = cfg.size
    diag = math.hypot(h, w)
    tips, ious, truths, matched, extra, switches, frames = [], [], 0, 0, 0, 0, 0
    per_class: dict[int, list[float]] = {}
    n = int(round(cfg.sequence_seconds * cfg.fps))
    for k in range(cfg.sequences):
        stream = CameraStream(engine.seg_classes, engine.activity_classes, engine.colors,
                              StreamSettings(thresholds=cfg.thresholds))
        last_id: dict[tuple, int] = {}
        cycle, previous = 0, None
        for fr in generate_sequence(cfg.seed + 10 + k, n, fps=cfg.fps, size=cfg.size):
            cycle += previous == 2 and fr.activity == 0  # a new lesion, new instruments
            previous = fr.activity
            frame = frame_from_array(fr.rgb, "rgb8")
            found = stream.update(frame, engine.infer([frame])[0]).instruments
            frames += 1
            used = set()
            for t in fr.instruments:
                truths += 1
                m = _match(t, found)
                if m is None:
                    continue
                matched += 1
                used.add(m.id)
                tips.append(math.dist(m.tip, t.tip) / diag)
                per_class.setdefault(t.class_id, []).append(tips[-1])
                box = _box(fr.mask, t.class_id)
                x, y, bw, bh = m.bbox
                ious.append(_iou((x, y, x + bw, y + bh), box) if box else 0.0)
                key = (k, cycle, t.class_id)
                switches += key in last_id and last_id[key] != m.id
                last_id[key] = m.id
            extra += sum(1 for x in found if x.id not in used)
    minutes = frames / cfg.fps / 60.0
    tips = np.array(tips)
    return {"frames": frames, "minutes": round(minutes, 3), "instances": truths,
            "detected": round(matched / truths, 4) if truths else None,
            "unmatched_detections_per_frame": round(extra / frames, 4) if frames else None,
            "tip_error_median_px": round(float(np.median(tips) * diag), 2) if len(tips) else None,
            "tip_error_median_pct": round(float(np.median(tips) * 100), 3) if len(tips) else None,
            "tip_within_2pct": round(float(np.mean(tips <= 0.02)), 4) if len(tips) else None,
            "box_iou_median": round(float(np.median(ious)), 4) if ious else None,
            "box_iou_mean": round(float(np.mean(ious)), 4) if ious else None,
            "id_switches": switches, "id_switches_per_minute": round(switches / minutes, 3) if minutes else None,
            "tip_error_median_pct_per_class": {engine.seg_classes[c]: round(float(np.median(v) * 100), 3)
                                               for c, v in sorted(per_class.items())}}


def evaluate(cfg: EvalSettings, *, with_model: bool = True, log=print) -> dict:
    """All three measurements; ``with_model=False`` skips the ones that need the weights."""
    t0 = time.monotonic()
    report: dict = {"date": datetime.date.today().isoformat(),
                    "settings": {"seed": cfg.seed, "frames": cfg.frames, "size_hw": list(cfg.size),
                                 "geometry_frames": cfg.geometry_frames, "sequences": cfg.sequences,
                                 "sequence_seconds": cfg.sequence_seconds, "fps": cfg.fps,
                                 "model": cfg.model, "thresholds": cfg.thresholds.__dict__}}
    log("degraded-image detection ...")
    report["degraded_detection"] = degraded_detection(cfg)
    log("instrument geometry from the true masks ...")
    report["geometry_from_truth"] = geometry_from_truth(cfg)
    if with_model:
        engine = _engine(cfg)
        report["settings"]["model"] = str(cfg.model or "demo weights")
        log("usable vs unusable frames with the model ...")
        report["usable_vs_unusable"] = usable_vs_unusable(cfg, engine)
        log("instrument geometry with the model's masks ...")
        report["geometry_with_model"] = geometry_with_model(cfg, engine)
        engine.close()
    report["runtime_s"] = round(time.monotonic() - t0, 1)
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = EvalSettings()
    parser.add_argument("--model", default=None, help="weights (default: the demo weights)")
    parser.add_argument("--seed", type=int, default=d.seed, help=f"seed of the held-out frames (default {d.seed})")
    parser.add_argument("--frames", type=int, default=d.frames, help="clean frames (each under every condition)")
    parser.add_argument("--size", default="640x512", metavar="WxH", help="frame size (default 640x512)")
    parser.add_argument("--geometry-frames", type=int, default=d.geometry_frames)
    parser.add_argument("--sequences", type=int, default=d.sequences)
    parser.add_argument("--sequence-seconds", type=float, default=d.sequence_seconds)
    parser.add_argument("--fps", type=float, default=d.fps)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-model", action="store_true", help="only the measurements without the weights")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--json", type=Path, help="write the report here")


def run(args) -> int:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.lower().split("x"))
    cfg = EvalSettings(seed=args.seed, frames=args.frames, size=(h, w), geometry_frames=args.geometry_frames,
                       sequences=args.sequences, sequence_seconds=args.sequence_seconds, fps=args.fps,
                       model=args.model, device=args.device)
    report = evaluate(cfg, with_model=not args.no_model)
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0
