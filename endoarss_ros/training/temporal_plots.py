"""Plots of the temporal model: training curves, and timelines of truth / frame-wise + EMA / temporal."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..files import pyplot


def plot_training(history: list[dict], path: str | Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].plot([h["epoch"] for h in history], [h["train_loss"] for h in history])
    ax[0].set_xlabel("epoch")
    ax[0].set_title("training loss")
    val = [h for h in history if "val" in h]
    for key in ("accuracy", "f1@50", "edit"):
        ax[1].plot([h["epoch"] for h in val], [h["val"]["temporal"][key] for h in val], marker="o", label=key)
    if val:
        ax[1].axhline(val[0]["val"]["ema"]["accuracy"], ls="--", color="grey", label="EMA accuracy")
    ax[1].set_ylim(0, 1)
    ax[1].set_xlabel("epoch")
    ax[1].set_title("validation (temporal, streamed)")
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def plot_timelines(videos: Sequence, class_names: Sequence[str], path: str | Path, max_videos: int = 6) -> Path:
    """One panel per video (``StreamedVideo``): rows truth, frame-wise + EMA, temporal, coloured by class."""
    plt = pyplot()
    videos = list(videos)[:max_videos]
    fig, axes = plt.subplots(len(videos), 1, figsize=(12, 1.3 * len(videos) + 0.6), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, v in zip(axes[:, 0], videos):
        t = v.stamps - v.stamps[0]
        for row, labels in enumerate((v.truth, v.ema, v.temporal)):
            colors = np.array([cmap(int(c) % 10) if c >= 0 else (1, 1, 1, 1) for c in labels])
            ax.scatter(t, np.full(len(t), 2 - row), c=colors, marker="|", s=120, linewidths=2)
        ax.set_yticks([2, 1, 0], ["truth", "frame+EMA", "temporal"])
        ax.set_title(v.name, fontsize=9, loc="left")
        ax.set_xlim(0, max(t[-1], 1e-3))
    axes[-1, 0].set_xlabel("seconds")
    handles = [plt.Line2D([], [], color=cmap(i), lw=6, label=n) for i, n in enumerate(class_names)]
    fig.legend(handles=handles, loc="upper right", ncol=len(class_names), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)
