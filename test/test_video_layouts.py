"""Phase-labelled videos in the released layouts (Cholec80, AutoLaparo, M2CAI16) and ours: detection, labels
aligned by time (also after re-encoding at another rate), --sample-fps, and the errors.

The fixtures are written here in the released file formats: a few seconds of tiny video (OpenCV VideoWriter)
whose colour says the phase, so every decoded frame can be checked against the label it was given.
"""
from __future__ import annotations

import numpy as np
import pytest

from endoarss_ros.data.phase_layout import PhaseLayoutError, write_video
from endoarss_ros.data.video_layouts import (
    AUTOLAPARO_PHASES,
    CHOLEC80_PHASES,
    M2CAI16_PHASES,
    detect_layout,
    find_labelled_videos,
    layout_phase_names,
    read_frames,
)

FPS = 25.0
SECONDS = 6
SIZE = (32, 48)
COLOURS = np.array([(220, 40, 40), (40, 200, 60), (40, 60, 220), (230, 210, 40)], np.float32)
# Phase of the original 25 fps frame f: changes at 1.6 s and at 4.0 s (not on a second: only time alignment,
# not a lucky index, gets the frames around them right).
CHANGES = (40, 100)


def phase_at_frame(f: int, shift: int = 0) -> int:
    return (shift + sum(f >= c for c in CHANGES)) % len(COLOURS)


def phase_at_time(t: float, shift: int = 0) -> int:
    return phase_at_frame(int(np.floor(t * FPS + 1e-6)), shift)


def colour_phase(rgb: np.ndarray) -> int:
    """The phase a decoded frame shows (nearest colour)."""
    mean = rgb.reshape(-1, 3).astype(np.float32).mean(0)
    return int(np.argmin(((COLOURS - mean) ** 2).sum(1)))


def frames_at(fps: float, shift: int = 0) -> list[np.ndarray]:
    """The video re-encoded at ``fps``: frame k shows the original frame at time k / fps."""
    out = []
    for k in range(int(SECONDS * fps)):
        rgb = np.empty((*SIZE, 3), np.uint8)
        rgb[:] = COLOURS[phase_at_time(k / fps, shift)].astype(np.uint8)
        out.append(rgb)
    return out


def write_cholec80(root, names=("video01",), fps: float = FPS, label_frames: int = int(SECONDS * FPS)):
    (root / "videos").mkdir(parents=True, exist_ok=True)
    (root / "phase_annotations").mkdir(exist_ok=True)
    for i, name in enumerate(names):
        write_video(root / "videos" / f"{name}.mp4", frames_at(fps, i), fps)
        rows = ["Frame\tPhase"] + [f"{f}\t{CHOLEC80_PHASES[phase_at_frame(f, i)]}" for f in range(label_frames)]
        (root / "phase_annotations" / f"{name}-phase.txt").write_text("\n".join(rows) + "\n")
    return root


def write_autolaparo(root, names=("01",), fps: float = FPS, seconds: int = SECONDS):
    """``videos/NN.mp4`` and ``labels/label_NN.txt``: header, then ``INDEX<TAB>PHASE_ID`` per second from 1."""
    (root / "videos").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    for i, name in enumerate(names):
        write_video(root / "videos" / f"{name}.mp4", frames_at(fps, i), fps)
        # The label of second s is the phase at its start; the video's colour changes inside second 1 (1.6 s),
        # so the label there describes the second's start: checked at whole seconds below.
        rows = ["Frame\tPhase"] + [f"{s + 1}\t{phase_at_time(s, i) + 1}" for s in range(seconds)]
        (root / "labels" / f"label_{name}.txt").write_text("\n".join(rows) + "\n")
    return root


def write_m2cai16(root, names=("workflow_video_01",), header: bool = True):
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        write_video(root / f"{name}.mp4", frames_at(FPS, i), FPS)
        rows = (["Frame\tPhase"] if header else []) + [
            f"{f}\t{M2CAI16_PHASES[phase_at_frame(f, i)]}" for f in range(int(SECONDS * FPS))]
        (root / f"{name}.txt").write_text("\n".join(rows) + "\n")
    return root


def check_aligned(video, sample_fps=None, at_seconds_only=False):
    """Every frame read carries the label of the phase its colour shows; returns the frame times."""
    times = []
    for t, rgb, label in read_frames(video, sample_fps):
        times.append(t)
        if at_seconds_only and abs(t - round(t)) > 1e-6:
            continue
        assert label == colour_phase(rgb) == phase_at_time(t, 0), (video.name, t)
    return times


def test_cholec80_as_released_aligned_and_sampled(tmp_path):
    root = write_cholec80(tmp_path / "cholec80")
    assert detect_layout(root) == "cholec80" and layout_phase_names(root) == list(CHOLEC80_PHASES)
    (video,) = find_labelled_videos(root, CHOLEC80_PHASES)
    assert video.labels.label_fps == 25.0 and video.fps == 25.0
    assert len(check_aligned(video)) == 150
    # 1 fps out of 25: six frames converted, the others only grabbed.
    assert check_aligned(video, sample_fps=1.0) == pytest.approx([0, 1, 2, 3, 4, 5])
    assert len(check_aligned(video, sample_fps=5.0)) == 30


@pytest.mark.parametrize("fps", [1.0, 10.0])
def test_a_reencoded_video_keeps_its_labels(tmp_path, fps):
    """Cholec80's indices count 25 fps frames; re-encoded at 1 or 10 fps, every frame keeps its own label."""
    root = write_cholec80(tmp_path / "c80")
    write_video(root / "videos" / "video01.mp4", frames_at(fps), fps)
    (video,) = find_labelled_videos(root, CHOLEC80_PHASES)
    assert video.fps == fps and video.labels.label_fps == 25.0
    times = check_aligned(video)
    assert len(times) == int(SECONDS * fps)
    # By index alone (label i for frame i) the 1 fps video would read phase 0 throughout: not what we got.
    labels = [label for _, _, label in read_frames(video)]
    assert len(set(labels)) == 3


def test_autolaparo_as_released(tmp_path):
    root = write_autolaparo(tmp_path / "autolaparo")
    assert detect_layout(root) == "autolaparo" and layout_phase_names(root) == list(AUTOLAPARO_PHASES)
    (video,) = find_labelled_videos(root, AUTOLAPARO_PHASES)
    assert video.labels.label_fps == 1.0 and video.labels.first_index == 1
    assert check_aligned(video, sample_fps=1.0) == pytest.approx([0, 1, 2, 3, 4, 5])
    # 25 fps read: each frame gets its second's label (index 1 + floor(t)).
    labels = {round(t * FPS): label for t, _, label in read_frames(video)}
    assert labels[0] == 0 and labels[49] == phase_at_time(1.0) and labels[50] == phase_at_time(2.0)
    # re-encoded at 5 fps: the same labels at the same times
    write_video(root / "videos" / "01.mp4", frames_at(5.0), 5.0)
    (video,) = find_labelled_videos(root, AUTOLAPARO_PHASES)
    assert check_aligned(video, at_seconds_only=True) == pytest.approx(np.arange(30) / 5.0)


@pytest.mark.parametrize("header", [True, False])
def test_m2cai16_workflow_as_released(tmp_path, header):
    split = write_m2cai16(tmp_path / "m2cai16" / "train_dataset", header=header)
    (split / "workflow_video_01_timestamp.txt").write_text("not read\n")
    assert detect_layout(split) == "m2cai16" and layout_phase_names(split) == list(M2CAI16_PHASES)
    (video,) = find_labelled_videos(split, M2CAI16_PHASES)
    assert video.name == "workflow_video_01" and len(check_aligned(video, sample_fps=2.0)) == 12
    with pytest.raises(PhaseLayoutError, match="train_dataset"):
        detect_layout(tmp_path / "m2cai16")


def test_our_layout_uses_the_video_rate(tmp_path):
    write_video(tmp_path / "case.mp4", frames_at(FPS), FPS)
    rows = ["Frame\tPhase"] + [f"{f}\t{CHOLEC80_PHASES[phase_at_frame(f)]}" for f in range(0, 150, 5)]
    (tmp_path / "case-phase.txt").write_text("\n".join(rows) + "\n")
    assert detect_layout(tmp_path) == "phase"
    assert layout_phase_names(tmp_path) == list(CHOLEC80_PHASES[:3])
    (video,) = find_labelled_videos(tmp_path, CHOLEC80_PHASES)
    assert video.labels.label_fps == FPS
    read = list(read_frames(video))
    labelled = [(t, label) for t, _, label in read if label >= 0]
    assert len(read) == 150 and [round(t * FPS) for t, _ in labelled] == list(range(0, 150, 5))
    assert all(label == phase_at_time(t) for t, label in labelled)


def test_label_errors_name_the_file(tmp_path):
    # labels past the video's end: 300 labels at 25 fps = 12 s for a 6 s video
    root = write_cholec80(tmp_path / "long", label_frames=300)
    with pytest.raises(PhaseLayoutError, match=r"video01-phase\.txt.*past the end of .*video01\.mp4"):
        find_labelled_videos(root, CHOLEC80_PHASES)
    # a rate that cannot be right: Cholec80 labels read as 1 fps (150 s of labels), AutoLaparo's as 25 fps (0.2 s)
    root = write_cholec80(tmp_path / "c80")
    with pytest.raises(PhaseLayoutError, match="past the end"):
        find_labelled_videos(root, CHOLEC80_PHASES, label_fps=1.0)
    al = write_autolaparo(tmp_path / "al")
    with pytest.raises(PhaseLayoutError, match=r"label_01\.txt.*cannot be right"):
        find_labelled_videos(al, AUTOLAPARO_PHASES, label_fps=25.0)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(PhaseLayoutError, match=r"label_01\.txt.*cannot be right"):
            find_labelled_videos(al, AUTOLAPARO_PHASES, label_fps=bad)
    # an AutoLaparo phase id out of 1..7, an unknown Cholec80 phase name
    label = al / "labels" / "label_01.txt"
    label.write_text("Frame\tPhase\n1\t1\n2\t9\n")
    with pytest.raises(PhaseLayoutError, match=r"label_01\.txt:3: AutoLaparo phase ids are 1\.\.7"):
        find_labelled_videos(al, AUTOLAPARO_PHASES)
    phase = root / "phase_annotations" / "video01-phase.txt"
    phase.write_text("Frame\tPhase\n0\tPreparation\n1\tTeaBreak\n")
    with pytest.raises(PhaseLayoutError, match=r"video01-phase\.txt:3: phase 'TeaBreak'"):
        find_labelled_videos(root, CHOLEC80_PHASES)
    # a video without its label file, a label file without its video
    phase.unlink()
    with pytest.raises(PhaseLayoutError, match=r"video01\.mp4: no label file"):
        find_labelled_videos(root, CHOLEC80_PHASES)
    (root / "videos" / "video01.mp4").unlink()
    (root / "phase_annotations" / "video02-phase.txt").write_text("Frame\tPhase\n0\tPreparation\n")
    with pytest.raises(PhaseLayoutError, match=r"video02-phase\.txt: no video video02"):
        find_labelled_videos(root, CHOLEC80_PHASES)
    (video,) = find_labelled_videos(write_cholec80(tmp_path / "ok"), CHOLEC80_PHASES)
    with pytest.raises(PhaseLayoutError, match="--sample-fps must be > 0"):
        next(read_frames(video, -1.0))


def test_the_tools_exit_2_naming_the_label_file(tmp_path, capsys):
    from endoarss_ros.cli import main
    from endoarss_ros.model import ModelConfig, build_model, save_model

    cfg = ModelConfig.endoarss_tiny().replace(activity_classes=list(CHOLEC80_PHASES))
    weights = str(save_model(build_model(cfg), tmp_path / "cholec_tiny"))
    root = write_cholec80(tmp_path / "long", label_frames=300)
    assert main(["train-temporal", "--model", weights, "--videos", str(root), "-o", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "endoarss train-temporal:" in err and "video01-phase.txt" in err and "past the end" in err
    assert main(["train", "--layout", "videos", "--data", str(root), "--out-dir", str(tmp_path / "runs"),
                 "--no-progress"]) == 2
    assert "video01-phase.txt" in capsys.readouterr().err


def test_eval_scores_a_phase_model_on_videos(tmp_path):
    import json

    from endoarss_ros.cli import main
    from endoarss_ros.model import ModelConfig, build_model, save_model

    cfg = ModelConfig.endoarss_tiny().replace(activity_classes=list(CHOLEC80_PHASES))
    weights = str(save_model(build_model(cfg), tmp_path / "cholec_tiny"))
    root = write_cholec80(tmp_path / "c80")
    assert main(["eval", weights, "--data", str(root), "--layout", "videos", "--split", ".", "--sample-fps", "2",
                 "--json", str(tmp_path / "eval.json")]) == 0
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["data"]["frames"] == 12 and report["data"]["layout"] == "videos"
    # the labels of the frames at 0, 0.5, ... 5.5 s: phase changes at 1.6 s and 4.0 s
    support = {n: d["support"] for n, d in report["metrics"]["activity"]["per_class"].items()}
    assert support == {n: (4 if i < 3 else 0) for i, n in enumerate(CHOLEC80_PHASES)}


# ---- end to end: a phase-only frame model, then a temporal model on it, evaluated with aligned labels ----------
WRITERS = {"cholec80": (write_cholec80, ("video01", "video02", "video03"), ("video04",), CHOLEC80_PHASES),
           "autolaparo": (write_autolaparo, ("01", "02", "03"), ("04",), AUTOLAPARO_PHASES)}


def expected_label(layout: str, t: float) -> int:
    """What the released labels say at time t (AutoLaparo labels whole seconds by their start)."""
    return phase_at_time(float(np.floor(t + 1e-6)) if layout == "autolaparo" else t)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["cholec80", "autolaparo"])
def test_phase_videos_train_a_frame_model_then_a_temporal_model_end_to_end(tmp_path, layout):
    import csv
    import json

    from endoarss_ros.cli import main
    from endoarss_ros.model import load_model
    from test.test_training_loop import TINY

    write, train_names, test_names, phases = WRITERS[layout]
    root = tmp_path / layout
    write(root / "train", train_names)
    write(root / "test", test_names)
    # the frame model: phases only (no masks), frames sampled at 2 fps, whole videos held out for validation
    assert main(["train", "--layout", "videos", "--data", str(root), "--sample-fps", "2", "--epochs", "1",
                 "--out-dir", str(tmp_path / "runs"), "--name", "frame", "--no-progress",
                 *[a for o in TINY + ["max_steps_per_epoch=2"] for a in ("--set", o)]]) == 0
    frame = tmp_path / "runs" / "frame"
    net = load_model(frame / "best.safetensors")
    assert list(net.config.activity_classes) == list(phases)
    assert list(net.config.seg_classes) == ["background", "untrained"]
    metrics = json.loads((frame / "metrics.json").read_text())
    assert metrics["test_best"]["activity_accuracy"] >= 0.0  # scored on test/ (12 frames of video04)
    assert np.isfinite(metrics["epochs"][0]["train"]["segmentation"])  # no masks: 0, not NaN
    # the temporal model on its features, frames read at 5 fps out of 25
    run = tmp_path / "temporal"
    assert main(["train-temporal", "--model", str(frame / "best.safetensors"), "--videos", str(root / "train"),
                 "--sample-fps", "5", "-o", str(run), "--epochs", "2", "--validate-every", "1", "--channels", "8",
                 "--layers", "4"]) == 0
    out = tmp_path / "eval"
    assert main(["eval-temporal", str(run / "temporal.safetensors"), "--model", str(frame / "best.safetensors"),
                 "--videos", str(root / "test"), "--sample-fps", "5", "-o", str(out), "--no-robustness"]) == 0
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == SECONDS * 5
    assert [float(r["stamp_s"]) for r in rows] == pytest.approx(np.arange(SECONDS * 5) / 5)
    assert [int(r["truth"]) for r in rows] == [expected_label(layout, float(r["stamp_s"])) for r in rows]
    report = json.loads((out / "eval_temporal.json").read_text())
    assert report["videos"] == list(test_names) and report["frames"] == SECONDS * 5


def test_a_bag_read_at_a_sample_rate_and_label_fps_refused_for_bags(tmp_path):
    from endoarss_ros.bag.labelled import labelled_sources
    from endoarss_ros.bag.synth_bag import write_synth_bag
    from endoarss_ros.model.config import MTLESD_ACTIVITY_CLASSES

    write_synth_bag(tmp_path / "bag", seconds=3.0, fps=8, size=(32, 40), encoding="rgb8", seed=1)
    (every,) = labelled_sources(tmp_path / "bag", MTLESD_ACTIVITY_CLASSES)
    (sampled,) = labelled_sources(tmp_path / "bag", MTLESD_ACTIVITY_CLASSES, sample_fps=2.0)
    stamps = [s for s, _, _ in every.frames()]
    assert len(stamps) == 24 and [s for s, _, _ in sampled.frames()] == pytest.approx([0, 0.5, 1, 1.5, 2, 2.5])
    assert sampled.variant != every.variant  # another cache entry
    with pytest.raises(PhaseLayoutError, match="--label-fps is for video layouts"):
        labelled_sources(tmp_path / "bag", MTLESD_ACTIVITY_CLASSES, label_fps=25.0)
