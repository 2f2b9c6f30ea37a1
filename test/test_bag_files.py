"""What `endoarss replay` leaves on disk when things go wrong: signals at each phase (the real command in its
own process), SIGKILL and the stale partials it leaves, a full disk (a real small tmpfs), bit flips in an MCAP
chunk. The promise: the outputs (bag, summary, timeline, video) appear together and complete, or not at all,
and the command's message says which."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from endoarss_ros.bag.mcap_checksums import BagChecksums, fill_chunk_checksums
from endoarss_ros.bag.partials import PAUSE_ENV, host_tag
from endoarss_ros.bag.reader import BagReader
from endoarss_ros.bag.replay import ReplayOptions, replay
from endoarss_ros.bag.synth_bag import write_synth_bag

from . import test_bag_replay as _replay_tests

_read = _replay_tests._read
tiny_model, engine = _replay_tests.tiny_model, _replay_tests.engine  # the same fixtures (module scope)


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory) -> Path:
    bag = tmp_path_factory.mktemp("bags") / "rec"
    write_synth_bag(bag, seconds=0.8, fps=10, size=(48, 64), seed=7)
    return bag


def _command(bag: Path, out: Path, model: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "endoarss_ros.cli", "replay", str(bag), "-o", str(out), "--model", model,
            "--device", "cpu", "--threads", "1", "--batch", "2", "--no-progress", *extra]


def _paused_process(cmd: list[str], phase: str, child_env) -> tuple[subprocess.Popen, list[str]]:
    """Start ``cmd`` with the pause hook at ``phase``; return once it says it is paused there."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**child_env, PAUSE_ENV: phase})
    lines: list[str] = []
    paused = threading.Event()

    def read():
        for line in proc.stderr:
            lines.append(line)
            if line.strip() == f"paused at {phase}":
                paused.set()

    threading.Thread(target=read, daemon=True).start()
    if not paused.wait(120):
        proc.kill()
        pytest.fail(f"never paused at {phase}: {''.join(lines)}")
    return proc, lines


def _finish(proc: subprocess.Popen, lines: list[str]) -> tuple[int, str]:
    rc = proc.wait(60)
    time.sleep(0.1)  # the reader thread drains the pipe
    return rc, "".join(lines)


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("phase,sig", [("model_loading", signal.SIGINT), ("frames", signal.SIGTERM),
                                       ("frames", signal.SIGINT), ("before_commit", signal.SIGTERM)])
def test_signal_before_the_outputs_are_complete_leaves_nothing(tmp_path, small_bag, tiny_model, child_env,
                                                               phase, sig):
    out_dir = tmp_path / "results"
    out_dir.mkdir()
    cmd = _command(small_bag, out_dir / "out", tiny_model, "--video", str(out_dir / "out.mp4"))
    proc, lines = _paused_process(cmd, phase, child_env)
    proc.send_signal(sig)
    if sig == signal.SIGINT and phase == "frames":
        proc.send_signal(sig)  # a double Ctrl-C: the second one lands during the clean-up
    rc, err = _finish(proc, lines)
    assert rc == 130, err
    assert "endoarss replay: interrupted; nothing was written" in err and "Traceback" not in err
    assert list(out_dir.iterdir()) == [], "an interrupted run left files behind"


def test_signal_while_outputs_go_into_place_keeps_them_all(tmp_path, small_bag, tiny_model, child_env):
    """The window of the old bug: the bag is renamed into place, the summary not yet. The signal is held until
    all of them are in place; the message says they are kept."""
    out_dir = tmp_path / "results"
    out_dir.mkdir()
    proc, lines = _paused_process(_command(small_bag, out_dir / "out", tiny_model), "commit", child_env)
    assert (out_dir / "out" / "metadata.yaml").is_file() and not (out_dir / "out.summary.json").exists()
    proc.send_signal(signal.SIGTERM)
    rc, err = _finish(proc, lines)
    assert rc == 130, err
    assert "interrupted after the outputs were complete; kept" in err and "nothing was written" not in err
    assert sorted(p.name for p in out_dir.iterdir()) == ["out", "out.summary.json", "out.timeline.png"]
    summary = json.loads((out_dir / "out.summary.json").read_text())
    assert summary["frames_out"] == 8 and len(_read(out_dir / "out")["/endoarss/activity"]) == 8


def test_sigkill_partials_are_removed_by_the_next_run(tmp_path, small_bag, tiny_model, engine, child_env):
    out_dir = tmp_path / "results"
    out_dir.mkdir()
    cmd = _command(small_bag, out_dir / "out", tiny_model, "--video", str(out_dir / "out.mp4"))
    proc, lines = _paused_process(cmd, "frames", child_env)
    proc.kill()
    _finish(proc, lines)
    host = host_tag()
    left = _hidden(out_dir)
    assert left == sorted([f".out.partial-{proc.pid}-{host}", f".out.mp4.partial-{proc.pid}-{host}.mp4"])
    assert not (out_dir / "out").exists()
    # Partials of a live process (this one) and of another host are not ours to remove; other hidden files stay.
    keep = [f".other.partial-{os.getpid()}-{host}", f".other.partial-{proc.pid}-another_host", ".notes"]
    for name in keep:
        (out_dir / name).write_text("x")
    summary = replay(ReplayOptions(input=small_bag, output=out_dir / "out", model=tiny_model, engine=engine,
                                   progress=False, video=out_dir / "out.mp4"))
    assert summary["frames_out"] == 8
    assert _hidden(out_dir) == sorted(keep)
    assert {"out", "out.mp4", "out.summary.json", "out.timeline.png"} <= {p.name for p in out_dir.iterdir()}


# -- a full disk --------------------------------------------------------------------------------------------
@pytest.fixture
def full_disk(tmp_path):
    """A 1 MiB tmpfs with ``leave(bytes)`` to fill it up to that much free space."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the full-disk tests run where the suite runs as root")
    mnt = tmp_path / "small_disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")

    def leave(free: int) -> None:
        filler = mnt / "filler"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        os.truncate(filler, max(0, filler.stat().st_size - free))

    try:
        yield mnt, leave
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("where", ["bag", "bag_sqlite3", "video", "video_at_open", "timeline", "summary"])
def test_full_disk_is_a_clear_error_and_leaves_nothing(tmp_path, tiny_model, full_disk, capfd, where):
    """One line on the process's stderr, also counting what native libraries (OpenCV, FFmpeg) write there."""
    from endoarss_ros.cli import main

    mnt, leave = full_disk
    bag = tmp_path / "in"
    write_synth_bag(bag, seconds=1.2, fps=10, size=(96, 128), seed=3)  # outputs of about 0.5 MB
    elsewhere = tmp_path / "results"
    elsewhere.mkdir()
    target = {"bag": mnt / "out", "bag_sqlite3": mnt / "out"}.get(where, elsewhere / "out")
    args = ["replay", str(bag), "-o", str(target), "--model", tiny_model, "--device", "cpu", "--no-progress",
            "--video", str((mnt if where.startswith("video") else elsewhere) / "out.mp4")]
    if where == "timeline":
        args += ["--timeline", str(mnt / "out.png")]
    if where == "summary":
        args += ["--summary", str(mnt / "out.json")]
    if where == "bag_sqlite3":
        args += ["--storage", "sqlite3"]
    leave({"bag": 64 * 1024, "bag_sqlite3": 64 * 1024, "video": 4096}.get(where, 0))
    assert main(args) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "no space left on device" in err, err
    assert sorted(p.name for p in mnt.iterdir()) == ["filler"]
    assert list(elsewhere.iterdir()) == []


# -- bit flips in an MCAP chunk -------------------------------------------------------------------------------
def test_damaged_mcap_chunk_frames_are_reported(tmp_path, engine, tiny_model):
    """A bag with chunk CRCs (as `ros2 bag record` writes; here rosbags' output with the CRCs filled in) and
    one byte flipped in its second chunk: that chunk's frames are failed frames with reason checksum_mismatch,
    every other frame is replayed, and frames in = frames out + failed frames."""
    bag = tmp_path / "in"
    write_synth_bag(bag, seconds=4, fps=10, size=(96, 128), seed=1, checksums=False)  # about 2 MB: two chunks
    data_file = bag / "in.mcap"
    assert fill_chunk_checksums(data_file) >= 2
    second = BagChecksums([data_file]).chunks[1]
    with open(data_file, "r+b") as f:
        f.seek(second.offset + 100_000)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x04]))

    summary = replay(ReplayOptions(input=bag, output=tmp_path / "out", model=tiny_model, engine=engine,
                                   progress=False, copy_input=True))
    failed = summary["failed_frames"]
    assert summary["frames_in"] == 40 and failed
    assert summary["frames_out"] + summary["frames_failed"] == summary["frames_in"]
    assert summary["failure_reasons"] == {"checksum_mismatch": len(failed)}
    assert [f["index"] for f in failed] == list(range(40 - len(failed), 40))  # the second chunk's frames
    assert "CRC-32" in failed[0]["error"] and "in.mcap" in failed[0]["error"]
    assert summary["checksums"] == {"chunks": 2, "with_checksum": 2, "damaged": 1}
    assert summary["ground_truth"]["frames_with_activity"] == summary["frames_out"]
    written = _read(tmp_path / "out")
    assert len(written["/endoarss/segmentation/mask"]) == summary["frames_out"]
    assert len(written["/endoscope/image_raw"]) == summary["frames_out"]  # damaged inputs are not copied
    # Our own output bags carry chunk checksums, so damage to them is found the same way.
    with BagReader(tmp_path / "out") as out:
        report = out.checksums().report()
    assert report["chunks"] >= 1 and report["with_checksum"] == report["chunks"] and report["damaged"] == 0


def test_readers_other_than_replay_do_not_skip_damaged_data_silently(tmp_path):
    """`endoarss play` and other plain readers get a BagError naming the damaged chunk (as rosbags gives for
    the first one), not a stream with holes."""
    from endoarss_ros.bag.reader import BagError

    bag = tmp_path / "in"
    write_synth_bag(bag, seconds=0.5, fps=10, size=(48, 64), seed=2)
    data_file = bag / "in.mcap"
    fill_chunk_checksums(data_file)
    chunk = BagChecksums([data_file]).chunks[0]
    with open(data_file, "r+b") as f:
        f.seek(chunk.offset + 20_000)
        f.write(b"\x00\xff")
    with BagReader(bag) as reader, pytest.raises(BagError, match=r"damaged data \(MCAP chunk at byte"):
        list(reader.messages(reader.image_topics()))


def test_overwrite_replaces_the_old_outputs_only_when_the_new_ones_are_complete(tmp_path, small_bag, engine,
                                                                                tiny_model):
    def opts(eng, namespace):
        return ReplayOptions(input=small_bag, output=tmp_path / "out", model=tiny_model, engine=eng,
                             progress=False, overwrite=True, namespace=namespace, batch=2)

    replay(opts(engine, "first"))
    with pytest.raises(KeyboardInterrupt):
        replay(opts(_replay_tests.InterruptOnSecondBatch(engine), "second"))
    assert set(_read(tmp_path / "out")) >= {"/first/activity"}  # the old bag, untouched
    old_summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert [t["output_namespace"] for t in old_summary["image_topics"].values()] == ["/first"]
    replay(opts(engine, "third"))
    assert "/third/activity" in _read(tmp_path / "out") and "/first/activity" not in _read(tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.summary.json", "out.timeline.png"]


def test_a_failing_rename_in_the_commit_undoes_the_ones_done(tmp_path, monkeypatch):
    """Fault injection on the real file system: the second of three renames fails (ENOSPC, as a full
    directory can give). The first output is taken back, the replaced old bag restored, no partial stays."""
    import errno

    from endoarss_ros.bag import partials
    from endoarss_ros.bag.partials import OutputError, OutputSet

    (tmp_path / "bag").mkdir()
    (tmp_path / "bag" / "old.mcap").write_text("old bag")
    outputs = OutputSet(overwrite=True)
    holder = outputs.folder(tmp_path / "bag")
    (holder / "bag").mkdir()
    (holder / "bag" / "new.mcap").write_text("new bag")
    outputs.write_text(tmp_path / "bag.summary.json", "{}")
    outputs.write_text(tmp_path / "bag.extra.txt", "x")
    real_replace, calls = os.replace, []

    def failing_replace(src, dst):
        calls.append(Path(dst).name)
        if Path(dst).name == "bag.summary.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(partials.os, "replace", failing_replace)
    with pytest.raises(OutputError, match=r"cannot write .*bag\.summary\.json: no space left on device"):
        outputs.commit()
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag"]
    assert [p.name for p in (tmp_path / "bag").iterdir()] == ["old.mcap"]
    assert "bag.summary.json" in calls and "bag.extra.txt" not in calls


def test_video_of_frames_of_any_size_starting_with_a_one_pixel_frame(tmp_path):
    """The video takes the first frame's size (even sides, at least 2): a 1x1 or one-row first frame is no error."""
    import cv2
    import numpy as np

    from endoarss_ros.bag.media import OverlayVideo
    from endoarss_ros.bag.partials import OutputSet

    for first in ((1, 1, 3), (1, 301, 3)):
        path = tmp_path / f"v{first[1]}.mp4"
        with OutputSet() as outputs:
            video = OverlayVideo(path, 10.0, outputs)
            for shape in (first, (64, 80, 3), (5, 3, 3)):
                video.add(np.full(shape, 200, np.uint8))
            video.finish()
            outputs.commit()
        cap = cv2.VideoCapture(str(path))
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
        assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (
            max(2, first[1] - first[1] % 2), 2)
        cap.release()
