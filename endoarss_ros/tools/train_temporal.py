"""``endoarss train-temporal``: train the causal temporal activity model on labelled videos.

Videos: folders of labelled videos as Cholec80, AutoLaparo or M2CAI16 release them, or in our layout
(``NAME.mp4`` + ``NAME-phase.txt``; ``data.video_layouts``), bags with a ground-truth activity topic, or folders of
such bags. Labels are matched to frames by time (``--label-fps``); ``--sample-fps`` reads fewer frames.
Features come from one pass of the frame model over every frame read and are cached per video (``--cache``; a
second run, or an interrupted one, skips the videos already done). The run folder gets
``config.json``, ``metrics.json`` (per epoch, the selection), ``training.png``, ``timelines_val.png`` and the
selected, bound weights ``temporal.safetensors`` (for ``temporal_model:=`` and ``endoarss eval-temporal``).

    endoarss train-temporal --model models/demo/endoarss_demo.safetensors --videos data/train \\
        --val-videos data/val -o runs/temporal
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

# A gap in frame-wise accuracy this large between training and validation videos suggests the frame model has
# seen the training videos (its features are better there than they will be in use).
MEMORISATION_GAP = 0.10


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="frame model weights the features come from")
    parser.add_argument("--cache", help="feature cache folder (default: RUN_DIR/features or OUT/features)")
    parser.add_argument("--device", default="cpu", help="frame model device (default cpu)")
    parser.add_argument("--batch", type=int, default=8, help="frames per frame-model batch (default 8)")
    parser.add_argument("--label-fps", type=float, metavar="FPS",
                        help="the rate the label files' indices count (default: the layout's own, Cholec80 and "
                             "M2CAI16 25, AutoLaparo 1; ours: the video's rate); labels are matched to frames by "
                             "time, so a re-encoded video keeps them")
    parser.add_argument("--sample-fps", type=float, metavar="FPS",
                        help="read this many frames per second of video (e.g. 1 for a 25 fps video); the others "
                             "are skipped before decoding and never reach the frame model (default: every frame)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from endoarss_ros.training.temporal_loop import TemporalTrainSettings

    d = TemporalTrainSettings()
    add_common_arguments(parser)
    parser.add_argument("--videos", action="append", required=True, metavar="DIR",
                        help="training videos (layout folder, bag or folder of bags); repeatable")
    parser.add_argument("--val-videos", action="append", metavar="DIR",
                        help="validation videos (default: --val-fraction of the training videos, by name)")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("-o", "--out", required=True, metavar="RUN_DIR", help="run folder")
    parser.add_argument("--tick-s", type=float, default=d.tick_s,
                        help="the model's clock: features averaged per tick of this many seconds (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--channels", type=int, default=d.channels)
    parser.add_argument("--layers", type=int, default=d.layers)
    parser.add_argument("--feature-noise", type=float, default=d.feature_noise,
                        help="std of Gaussian noise on normalised features (guard against memorised features)")
    parser.add_argument("--channel-drop", type=float, default=d.channel_drop)
    parser.add_argument("--validate-every", type=int, default=d.validate_every)


def load_sources(dirs, activity_classes, args: argparse.Namespace | None = None) -> list:
    """The labelled videos of every folder, read with ``args``' --label-fps / --sample-fps."""
    from endoarss_ros.bag.labelled import labelled_sources

    rates = {"label_fps": getattr(args, "label_fps", None), "sample_fps": getattr(args, "sample_fps", None)}
    videos = []
    for d in dirs:
        videos += labelled_sources(d, activity_classes, **rates)
    names = [v.name for v in videos]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"videos with the same name in different folders: {', '.join(dup)} (rename one)")
    return videos


def frame_model_check(train, val) -> dict:
    """Frame-wise accuracy of the frame model on the training vs the validation videos."""
    import numpy as np

    def acc(videos):
        per = [float(np.mean(v.probs.argmax(1)[v.labels >= 0] == v.labels[v.labels >= 0])) for v in videos
               if (v.labels >= 0).any()]
        return float(np.mean(per)) if per else float("nan")

    a, b = acc(train), acc(val)
    return {"frame_accuracy_train_videos": a, "frame_accuracy_val_videos": b, "gap": a - b,
            "suspect_memorised": bool(a - b > MEMORISATION_GAP)}


def run(args: argparse.Namespace) -> int:
    from endoarss_ros.bag.feature_cache import FeatureExtractor, cached_features
    from endoarss_ros.bag.temporal_scoring import validation_scorer
    from endoarss_ros.data.phase_layout import PhaseLayoutError
    from endoarss_ros.training.temporal_loop import TemporalTrainSettings, train_temporal

    out = Path(args.out)
    try:
        extractor = FeatureExtractor(args.model, device=args.device, batch=args.batch)
        train_src = load_sources(args.videos, extractor.activity_classes, args)
        val_src = load_sources(args.val_videos, extractor.activity_classes, args) if args.val_videos else []
    except (OSError, ValueError, PhaseLayoutError, RuntimeError) as e:
        print(f"endoarss train-temporal: {e}", file=sys.stderr)
        return 2
    if not val_src:
        n_val = max(1, round(args.val_fraction * len(train_src)))
        if len(train_src) < 2:
            print("endoarss train-temporal: one video cannot be split into training and validation; give "
                  "--val-videos", file=sys.stderr)
            return 2
        ordered = sorted(train_src, key=lambda v: v.name)
        train_src, val_src = ordered[n_val:], ordered[:n_val]
    clash = {v.name for v in train_src} & {v.name for v in val_src}
    if clash:
        print(f"endoarss train-temporal: videos both in training and validation: {', '.join(sorted(clash))}",
              file=sys.stderr)
        return 2
    cache = Path(args.cache) if args.cache else out / "features"
    try:  # a video that ends before its labels (a container without a frame count) is found only here
        train = cached_features(extractor, train_src, cache)
        val = cached_features(extractor, val_src, cache)
    except PhaseLayoutError as e:
        print(f"endoarss train-temporal: {e}", file=sys.stderr)
        return 2
    check = frame_model_check(train, val)
    print(f"frame model, frame-wise accuracy: training videos {check['frame_accuracy_train_videos']:.3f}, "
          f"validation videos {check['frame_accuracy_val_videos']:.3f}")
    if check["suspect_memorised"]:
        print("warning: the frame model is much better on the training videos than on the validation ones: it "
              "has probably been trained on them; the temporal model will learn to trust its features too much. "
              "Use videos the frame model has not seen (or out-of-fold frame models).", file=sys.stderr)
    settings = dataclasses.replace(
        TemporalTrainSettings(), tick_s=args.tick_s, epochs=args.epochs, seed=args.seed, lr=args.lr,
        channels=args.channels, layers=args.layers, feature_noise=args.feature_noise, channel_drop=args.channel_drop,
        validate_every=args.validate_every)
    record = train_temporal(train, validation_scorer(val), feature_names=extractor.feature_names,
                            class_names=extractor.activity_classes, frame_model_id=extractor.model_id, run_dir=out,
                            settings=settings, notes={"frame_model": Path(args.model).name,
                                                      "frame_model_check": check})
    record["frame_model_check"] = check
    (out / "metrics.json").write_text(json.dumps(record, indent=1))
    _plot_val(out, record, extractor, val)
    best = record["best"]["val"]
    print(f"selected epoch {record['best_epoch']}: validation accuracy temporal {best['temporal']['accuracy']:.3f} "
          f"vs frame+EMA {best['ema']['accuracy']:.3f}")
    print(f"wrote {record['weights']}")
    return 0


def _plot_val(out: Path, record: dict, extractor, val) -> None:
    from endoarss_ros.bag.temporal_scoring import stream_video
    from endoarss_ros.inference.temporal_activity import TemporalSettings
    from endoarss_ros.model.temporal_tcn import load_temporal
    from endoarss_ros.training.temporal_plots import plot_timelines

    model, binding = load_temporal(record["weights"])
    settings = TemporalSettings.from_binding(binding)
    streamed = [stream_video(model, binding, settings, v) for v in val]
    plot_timelines(streamed, extractor.activity_classes, out / "timelines_val.png")
