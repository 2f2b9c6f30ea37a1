"""Files a replay writes besides the bag: the activity timeline plot and the overlay video, each written as
a partial of the run's ``partials.OutputSet`` and put in place with the bag when everything is complete."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from .partials import OutputSet, write_failure
from .writer import OutputError


def plot_timeline(path: Path, rows: list[tuple[str, list[dict]]], names: list[str], *, title: str,
                  outputs: OutputSet) -> None:
    """Activity segments as coloured bars, one row per (label, segments); written as a partial of ``outputs``."""
    from ..files import pyplot

    plt = pyplot()  # first: it points matplotlib's cache away from $HOME before matplotlib is imported
    from matplotlib.patches import Patch

    colors = plt.get_cmap("tab10").colors
    fig, ax = plt.subplots(figsize=(10, 1.0 + 0.6 * max(1, len(rows))), dpi=100)
    for y, (_, segments) in enumerate(rows):
        bars = [(s["start_s"], max(s["end_s"] - s["start_s"], 1e-3)) for s in segments]
        ax.broken_barh(bars, (y - 0.35, 0.7), facecolors=[colors[s["class_id"] % 10] for s in segments])
    ax.set_yticks(range(len(rows)), [label for label, _ in rows])
    ax.invert_yaxis()
    ax.set_xlabel("time (s)")
    ax.set_title(title, fontsize=10)
    ax.legend(handles=[Patch(color=colors[i % 10], label=n) for i, n in enumerate(names)],
              loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(outputs.partial(path), bbox_inches="tight", format="png")
    except OSError as e:
        raise write_failure(e, path) from e
    finally:
        plt.close(fig)


class OverlayVideo:
    """mp4v video of the overlays, written as a partial of ``outputs`` (checked readable when finished)."""

    def __init__(self, path: Path, fps: float, outputs: OutputSet):
        self.path = path
        self.fps = fps
        self.outputs = outputs
        self.tmp = outputs.partial(path, ext=path.suffix or ".mp4")  # OpenCV picks the container by extension
        self.writer = None
        self.size: tuple[int, int] | None = None
        self.frames = 0

    def add(self, rgb: np.ndarray) -> None:
        import cv2

        if self.writer is None:
            from ..inference.frames import quiet_opencv_log

            # A full disk is one line of ours (see finish), not OpenCV's warning per frame nor FFmpeg's own
            # "moov atom not found" when the file is read back (FFmpeg reads its level at its first use).
            quiet_opencv_log()
            os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = rgb.shape[:2]
            self.size = (max(2, w - w % 2), max(2, h - h % 2))  # the codec wants even sides, at least 2
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
            if not self.writer.isOpened():
                raise self._failure("OpenCV's mp4v writer did not open")
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if (bgr.shape[1], bgr.shape[0]) != self.size:
            bgr = cv2.resize(bgr, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(bgr)
        self.frames += 1

    def finish(self) -> None:
        """Close the file and check that every frame can be read back: OpenCV's writer does not report
        write errors (a full disk gives warnings and an unplayable file)."""
        import cv2

        if self.writer is None:  # no frame to show: no video
            self.outputs.forget(self.tmp)
            return
        self.writer.release()
        self.writer = None
        cap = cv2.VideoCapture(str(self.tmp))
        readable = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
        cap.release()
        if readable != self.frames:
            raise self._failure(f"{readable} of {self.frames} frames readable")

    def _failure(self, what: str) -> OutputError:
        full = shutil.disk_usage(self.tmp.parent).free == 0
        return OutputError(f"cannot write video {self.path}: {what}"
                           + (" (no space left on device)" if full else "") + "; nothing was kept")

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        self.tmp.unlink(missing_ok=True)
