"""The 3D stage of ``endoarss bench``: cost per stereo pair (match, refine, triangulate, tissue disparity) on one
CPU core, and the geometry's accuracy on rendered pairs with ground-truth masks (the segmentation's own errors
excluded: ``endoarss replay --stereo`` scores the whole chain).

Pairs come from ``data.stereo_scene`` (default: 1280x1024, f 1100 px, 5 mm baseline, tissue at 50-120 mm).
Both input kinds are timed: ``raw`` (undistortion and rectification from camera_info, as for ``image_raw``) and
``rectified`` (``image_rect``: P only). Wall time per stage (as ``/diagnostics`` and the replay report it) and the
thread's CPU time of the whole stage (``cpu_total``: what the stage costs the core, less sensitive to other
processes on a shared machine).
"""
from __future__ import annotations

import time

import numpy as np

TARGET_MS = 5.0


def _percentiles(values) -> dict:
    v = np.asarray(values, np.float64)
    return {"p50": float(np.median(v)), "p90": float(np.percentile(v, 90)), "mean": float(v.mean()),
            "n": int(len(v))}


def measure(pairs: int = 24, *, seed: int = 0, repeats: int = 3, settings=None) -> dict:
    """Render ``pairs`` stereo pairs, run the 3D stage ``repeats`` times on each (raw and rectified input):
    stage costs per pair (ms) and accuracy against the rendered truth."""
    import cv2
    import torch

    from endoarss_ros.data.classes import MTLESD
    from endoarss_ros.data.stereo_scene import StereoSceneSettings, generate_stereo_sequence
    from endoarss_ros.inference.camera_model import CameraModel
    from endoarss_ros.inference.instruments import extract
    from endoarss_ros.inference.stereo import StereoGeometry, StereoRig
    from endoarss_ros.metrics.stereo import Predicted3D, StereoEvaluator
    from endoarss_ros.model.config import instrument_class_ids

    threads = (torch.get_num_threads(), cv2.getNumThreads())
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        settings = settings or StereoSceneSettings()
        spec = settings.rig
        rig = StereoRig.from_models(CameraModel.from_fields(spec.camera_info_fields("left", "left")),
                                    CameraModel.from_fields(spec.camera_info_fields("right", "right")))
        classes = instrument_class_ids(list(MTLESD.seg_classes))
        kinds = {"raw": StereoGeometry(rig, instrument_classes=classes),
                 "rectified": StereoGeometry(rig, instrument_classes=classes, rectified_input=True)}
        stages = {k: {s: [] for s in (*StereoGeometry.STAGES, "total", "cpu_total")} for k in kinds}
        first_call_ms = {}
        evaluator = StereoEvaluator.for_image(spec.width, spec.height, spec.focal_px, spec.baseline_m)
        rendered = 0
        for frame in generate_stereo_sequence(seed, pairs, 2.0, settings, segment_seconds=(1.0, 3.0)):
            rendered += 1
            left = extract(frame.left_mask, classes)
            right = extract(frame.right_mask, classes)
            args = (frame.left, frame.right, frame.left_mask, frame.right_mask, left, right)
            for kind, geometry in kinds.items():
                if kind not in first_call_ms:  # builds the rectification maps once per rig
                    t0 = time.perf_counter()
                    geometry.process(*args)
                    first_call_ms[kind] = (time.perf_counter() - t0) * 1000
                for _ in range(repeats):
                    cpu = time.thread_time()
                    result = geometry.process(*args)
                    stages[kind]["cpu_total"].append((time.thread_time() - cpu) * 1000)
                    for stage, ms in result.stage_ms.items():
                        stages[kind][stage].append(ms)
                    stages[kind]["total"].append(sum(result.stage_ms.values()))
                if kind == "raw":
                    evaluator.add([t._asdict() for t in frame.instruments],
                                  [Predicted3D(i.class_id, i.tip, g.has_3d, tuple(g.tip_3d), tuple(g.entry_3d),
                                               g.tip_to_tissue) for i, g in zip(left, result.instruments)])
    finally:
        torch.set_num_threads(threads[0])
        cv2.setNumThreads(threads[1])
    cost = {kind: {stage: _percentiles(v) for stage, v in s.items()} for kind, s in stages.items()}
    return {"input": f"{spec.width}x{spec.height}", "focal_px": spec.focal_px, "baseline_mm": spec.baseline_m * 1000,
            "depth_range_mm": [d * 1000 for d in settings.depth_range_m], "pairs": rendered, "repeats": repeats,
            "threads": {"torch": 1, "opencv": 1}, "stage_ms": cost, "first_call_ms": first_call_ms,
            "target_ms": TARGET_MS, "met_wall": cost["raw"]["total"]["p50"] <= TARGET_MS,
            "met_cpu": cost["raw"]["cpu_total"]["p50"] <= TARGET_MS,
            "accuracy_ground_truth_masks": evaluator.result()}


def summary_line(row: dict) -> str:
    raw, rect = row["stage_ms"]["raw"], row["stage_ms"]["rectified"]
    acc = row["accuracy_ground_truth_masks"]
    tip = acc["tip_error_mm"]
    return (f"3D stage {row['input']} (1 core, {row['pairs']} pairs): raw p50 {raw['total']['p50']:.2f} ms (match "
            f"{raw['match']['p50']:.2f}, refine {raw['refine']['p50']:.2f}, triangulate "
            f"{raw['triangulate']['p50']:.2f}, tissue {raw['tissue_disparity']['p50']:.2f}; thread CPU "
            f"{raw['cpu_total']['p50']:.2f}); rectified p50 {rect['total']['p50']:.2f} ms (CPU "
            f"{rect['cpu_total']['p50']:.2f}); target {row['target_ms']:g} ms; ground-truth masks: "
            f"{acc['with_3d']}/{acc['visible']} with 3D, tip error median {_mm(tip['median'])} p90 {_mm(tip['p90'])}")


def _mm(value) -> str:
    return "n/a" if value is None else f"{value:.2f} mm"
