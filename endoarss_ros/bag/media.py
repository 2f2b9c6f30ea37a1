"""Files a replay writes besides the bag: the activity timeline plot and the overlay video, each written
under a temporary name and renamed into place when complete."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def plot_timeline(path: Path, rows: list[tuple[str, list[dict]]], names: list[str], *, title: str) -> None:
    """Activity segments as coloured bars, one row per (label, segments); written via a temp file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}.png")
    try:
        fig.savefig(tmp, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)


class OverlayVideo:
    """mp4v video of the overlays, written to a temp name and renamed when complete."""

    def __init__(self, path: Path, fps: float):
        self.path = path
        self.fps = fps
        self.tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix or '.mp4'}")
        self.writer = None
        self.size: tuple[int, int] | None = None
        self.frames = 0

    def add(self, rgb: np.ndarray) -> None:
        import cv2

        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = rgb.shape[:2]
            self.size = (w - w % 2, h - h % 2)
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
            if not self.writer.isOpened():
                raise RuntimeError(f"cannot write video {self.path} (OpenCV mp4v writer did not open)")
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if (bgr.shape[1], bgr.shape[0]) != self.size:
            bgr = cv2.resize(bgr, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(bgr)
        self.frames += 1

    def finish(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
            os.replace(self.tmp, self.path)

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        self.tmp.unlink(missing_ok=True)
