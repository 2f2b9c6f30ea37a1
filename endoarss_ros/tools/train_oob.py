"""`endoarss train-oob`: train the out-of-body detector (``inference.out_of_body``) and report it.

In-body frames: synthetic ESD procedures (``data.procedures``, training seed set ``--seed``, held-out set
``--seed + 1000``) and random frames (``data.synth``). Out-of-body frames: real photographs with open licences
(``data.outside``: training photographs; the held-out ones are never seen) and synthetic room scenes. Writes the
weights (safetensors) and a JSON report: precision / recall on the held-out procedures, held-out photographs and
held-out room scenes, and the detector's cost per frame.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from endoarss_ros.files import write_atomic
from endoarss_ros.inference.out_of_body import DEFAULT_OUT_OF_BODY_MODEL, OutOfBodySettings

SIZES = ((180, 224), (256, 320), (240, 320), (288, 352))


def add_arguments(parser) -> None:
    parser.add_argument("--out", type=Path, default=Path(DEFAULT_OUT_OF_BODY_MODEL), help="weights file to write")
    parser.add_argument("--report", type=Path, default=Path("docs/out_of_body.json"), help="JSON report to write")
    parser.add_argument("--seed", type=int, default=27)
    parser.add_argument("--procedures", type=int, default=6, help="training procedures (held out: 3 more)")
    parser.add_argument("--views", type=int, default=60, help="views per training photograph")
    parser.add_argument("--rooms", type=int, default=900, help="synthetic room scenes for training")
    parser.add_argument("--random-frames", type=int, default=500, help="random in-body frames for training")
    parser.add_argument("--hidden", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=600)
    parser.add_argument("--evaluate", type=Path, metavar="WEIGHTS",
                        help="train nothing: score these weights on the held-out sets at today's threshold")


def _features(rgb: np.ndarray) -> np.ndarray:
    from endoarss_ros.inference import out_of_body, quality
    from endoarss_ros.inference.frames import frame_from_array

    frame = frame_from_array(rgb, "rgb8")
    small = quality.analysis_rgb(frame)
    return out_of_body.frame_features(small, quality.measure(frame, small).as_dict())


def procedure_frames(seed: int, count: int, every: int = 3, minutes: float = 1.5) -> list[np.ndarray]:
    """Every ``every``-th frame of ``count`` synthetic procedures of set ``seed`` (sizes vary by procedure)."""
    from endoarss_ros.data.procedures import ProcedureSettings, numbered_procedure

    out = []
    for k in range(count):
        size = SIZES[k % len(SIZES)]
        _, proc = numbered_procedure(seed, k, ProcedureSettings(minutes=minutes, fps=2.0, size=size))
        out += [f.rgb for f in proc.frames() if f.index % every == 0]
    return out


def random_frames(seed: int, count: int) -> list[np.ndarray]:
    """Random in-body frames, half of them degraded (noise, blur, JPEG, smoke, blood at severity 1-3): a
    degraded view of tissue is still inside the patient."""
    from endoarss_ros.data.corruptions import CORRUPTIONS
    from endoarss_ros.data.synth import generate_frame

    rng = np.random.default_rng(seed)
    names = sorted(CORRUPTIONS)
    out = []
    for i in range(count):
        rgb = generate_frame(rng, int(rng.integers(3)), SIZES[i % len(SIZES)])[0]
        if rng.random() < 0.5:
            rgb = CORRUPTIONS[names[int(rng.integers(len(names)))]](rgb, int(rng.integers(1, 4)), rng)
        out.append(rgb)
    return out


def room_frames(seed: int, count: int) -> list[np.ndarray]:
    from endoarss_ros.data.outside import room_scene

    rng = np.random.default_rng(seed)
    return [room_scene(rng, SIZES[i % len(SIZES)]) for i in range(count)]


def photo_frames(names, views: int, seed: int) -> list[np.ndarray]:
    from endoarss_ros.data.outside import photo_views

    out = []
    for i, name in enumerate(names):
        out += photo_views(name, views, seed, SIZES[i % len(SIZES)])
    return out


def fit(x: np.ndarray, y: np.ndarray, hidden: int, epochs: int, seed: int):
    """A two-layer perceptron by full-batch Adam on standardised features, classes weighted equally."""
    import torch

    from endoarss_ros.inference.out_of_body import OutOfBodyDetector

    torch.manual_seed(seed)
    mean, std = x.mean(0), x.std(0) + 1e-3
    xt = torch.from_numpy((x - mean) / std).float()
    yt = torch.from_numpy(y).float()
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-4)
    pos_weight = torch.tensor([(y == 0).sum() / max(1, (y == 1).sum())])
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    for _ in range(epochs):
        opt.zero_grad()
        loss = loss_fn(net(xt)[:, 0], yt)
        loss.backward()
        opt.step()
    w1, b1 = net[0].weight.detach().numpy().T, net[0].bias.detach().numpy()
    w2, b2 = net[2].weight.detach().numpy().T, net[2].bias.detach().numpy()
    return OutOfBodyDetector({"mean": mean, "std": std, "w1": w1, "b1": b1, "w2": w2, "b2": b2}), loss.item()


def scores(p: np.ndarray, y: np.ndarray, threshold: float) -> dict:
    pred = p >= threshold
    tp, fp = int((pred & (y == 1)).sum()), int((pred & (y == 0)).sum())
    fn, tn = int((~pred & (y == 1)).sum()), int((~pred & (y == 0)).sum())
    return {"frames": int(len(y)), "out_of_body": int((y == 1).sum()), "true_positives": tp,
            "false_positives": fp, "false_negatives": fn, "true_negatives": tn,
            "precision": round(tp / (tp + fp), 4) if tp + fp else None,
            "recall": round(tp / (tp + fn), 4) if tp + fn else None,
            "false_positive_rate": round(fp / (fp + tn), 4) if fp + tn else None}


def cost_per_frame(detector, frames: list[np.ndarray], repeats: int = 3) -> dict:
    """Median ms per frame: ``decision_ms``: features + detector + state on a frame whose analysis image and
    measures exist (what the gate adds to the node and replay); ``blank_ms``: blanking the frame (gated frames
    only); ``scrub_decision_ms``: the whole decision from pixels, measures included (scrub's cost)."""
    from endoarss_ros.inference import out_of_body, quality
    from endoarss_ros.inference.frames import frame_from_array

    state = out_of_body.OutOfBodyState()
    decision, blank, whole = [], [], []
    for _ in range(repeats):
        for rgb in frames:
            frame = frame_from_array(rgb, "rgb8")
            t0 = time.perf_counter()
            small = quality.analysis_rgb(frame)
            measures = quality.measure(frame, small).as_dict()
            t1 = time.perf_counter()
            state.update(detector.probability(small, measures))
            t2 = time.perf_counter()
            out_of_body.blank(rgb)
            t3 = time.perf_counter()
            decision.append((t2 - t1) * 1e3)
            blank.append((t3 - t2) * 1e3)
            whole.append((t2 - t0) * 1e3)
    return {"decision_ms_median": round(float(np.median(decision)), 3),
            "blank_ms_median": round(float(np.median(blank)), 3),
            "scrub_decision_ms_median": round(float(np.median(whole)), 3),
            "frames": len(frames) * repeats, "size": list(frames[0].shape[:2])}


def boundary_scores(detector, inside: np.ndarray, photos: dict[str, np.ndarray], before: int = 20) -> dict:
    """The state on recordings in -> out -> in: ``before`` held-out procedure frames, every view of one held-out
    photograph, the next procedure frames. Per photograph: out-of-body frames that were not gated (leaked),
    in-body frames gated before the interval and after it (the hysteresis tail)."""
    from endoarss_ros.inference.out_of_body import OutOfBodyState

    p_in = detector.probabilities(inside)
    out = {}
    for name, feats in photos.items():
        p_out = detector.probabilities(feats)
        seq = np.concatenate([p_in[:before], p_out, p_in[before:2 * before]])
        state = OutOfBodyState()
        gated = np.array([state.update(float(p), i).gated for i, p in enumerate(seq)])
        n = len(p_out)
        out[name] = {"out_of_body_frames": n, "leaked": int((~gated[before:before + n]).sum()),
                     "first_frame_gated": bool(gated[before]), "in_body_gated_before": int(gated[:before].sum()),
                     "in_body_gated_after": int(gated[before + n:].sum()), "entries": state.entries}
    return out


def run(args) -> int:
    from endoarss_ros.data.outside import HELD_OUT_PHOTOS, TRAIN_PHOTOS
    from endoarss_ros.inference.out_of_body import OutOfBodyDetector

    t0 = time.monotonic()
    log = lambda *a: print("train-oob:", *a, file=sys.stderr, flush=True)  # noqa: E731
    held_out = {
        "held_out_procedures": procedure_frames(args.seed + 1000, 3, every=1),
        "held_out_photos": photo_frames(HELD_OUT_PHOTOS, 50, args.seed + 1000),
        "held_out_rooms": room_frames(args.seed + 1000, 200),
    }
    train = {} if args.evaluate else {
        "train_in_body": procedure_frames(args.seed, args.procedures) + random_frames(args.seed, args.random_frames),
        "train_out_of_body": photo_frames(TRAIN_PHOTOS, args.views, args.seed) + room_frames(args.seed,
                                                                                             args.rooms),
    }
    sets = {**train, **held_out}
    log(", ".join(f"{k} {len(v)}" for k, v in sets.items()), f"({time.monotonic() - t0:.0f} s)")
    feats = {k: np.stack([_features(f) for f in v]) for k, v in sets.items()}
    threshold = OutOfBodySettings().threshold
    report: dict = {"seed": args.seed, "threshold": threshold, "train_photos": list(TRAIN_PHOTOS),
                    "held_out_photos": list(HELD_OUT_PHOTOS), "held_out_procedure_seed_set": args.seed + 1000,
                    "frames": {k: len(v) for k, v in sets.items()}}
    if args.evaluate:
        detector = OutOfBodyDetector.load(args.evaluate)
        report["evaluated_model"] = str(args.evaluate)
    else:
        x = np.concatenate([feats["train_in_body"], feats["train_out_of_body"]])
        y = np.concatenate([np.zeros(len(feats["train_in_body"])), np.ones(len(feats["train_out_of_body"]))])
        detector, loss = fit(x, y, args.hidden, args.epochs, args.seed)
        report["final_training_loss"] = round(loss, 5)
        report["training"] = scores(detector.probabilities(x), y, threshold)
    held_in = feats["held_out_procedures"]
    for name in ("held_out_photos", "held_out_rooms"):
        xs = np.concatenate([held_in, feats[name]])
        ys = np.concatenate([np.zeros(len(held_in)), np.ones(len(feats[name]))])
        report[f"procedures_vs_{name.removeprefix('held_out_')}"] = scores(detector.probabilities(xs), ys, threshold)
    views = len(sets["held_out_photos"]) // len(HELD_OUT_PHOTOS)
    report["in_out_in"] = boundary_scores(detector, held_in, {
        name: feats["held_out_photos"][i * views:(i + 1) * views] for i, name in enumerate(HELD_OUT_PHOTOS)})
    import cv2

    report["cost_per_frame"] = {"procedure_frames": cost_per_frame(detector, sets["held_out_procedures"][:40]),
                                "1920x1080": cost_per_frame(detector, [cv2.resize(f, (1920, 1080)) for f in
                                                                       sets["held_out_photos"][:10]])}
    report["wall_s"] = round(time.monotonic() - t0, 1)
    if not args.evaluate:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        detector.save(args.out, {"seed": str(args.seed), "threshold": str(threshold)})
    write_atomic(args.report, json.dumps(report, indent=2) + "\n")
    for k in ("procedures_vs_photos", "procedures_vs_rooms"):
        r = report[k]
        log(f"{k}: precision {r['precision']}, recall {r['recall']}, false positives {r['false_positives']} of "
            f"{r['frames'] - r['out_of_body']} in-body frames")
    log(f"wrote {args.report}" + ("" if args.evaluate else f" and {args.out}") + f" ({report['wall_s']} s)")
    return 0
