"""Run plots as PNG (matplotlib, Agg backend): loss curves, per-class IoU, activity confusion matrix."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..files import pyplot


def plot_losses(history: list[dict], path: str | Path) -> Path:
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for task in ("segmentation", "activity"):
        ax[0].plot(epochs, [h["train"][task] for h in history], marker="o", label=f"train {task}")
        if all("val" in h for h in history):
            ax[0].plot(epochs, [h["val"]["loss"][task] for h in history], marker="x", ls="--", label=f"val {task}")
    ax[0].set_xlabel("epoch")
    ax[0].set_ylabel("cross-entropy")
    ax[0].set_yscale("log")
    ax[0].legend()
    ax[0].set_title("losses")
    if all("val" in h for h in history):
        ax[1].plot(epochs, [h["val"]["activity_accuracy"] for h in history], marker="o", label="activity accuracy")
        ax[1].plot(epochs, [h["val"]["miou_fg"] for h in history], marker="o", label="mIoU (foreground)")
        ax[1].plot(epochs, [h["val"]["miou_all"] for h in history], marker="x", label="mIoU (incl. background)")
        ax[1].set_ylim(0, 1)
        ax[1].legend()
    ax[1].set_xlabel("epoch")
    ax[1].set_title("validation")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def plot_iou(result: dict, path: str | Path, title: str = "") -> Path:
    plt = pyplot()
    iou = result["segmentation"]["iou"]
    names = list(iou)
    vals = [np.nan if iou[n] is None else iou[n] for n in names]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(range(len(names)), vals, color="tab:blue")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("IoU")
    s = result["segmentation"]
    ax.set_title(f"{title} per-class IoU: mIoU fg {s['miou_fg']:.3f}, incl. background {s['miou_all']:.3f}")
    for i, v in enumerate(vals):
        if not np.isnan(v):
            ax.text(i, v + 0.01, f"{v:.2f}", ha="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def plot_confusion(result: dict, path: str | Path, title: str = "") -> Path:
    plt = pyplot()
    a = result["activity"]
    cm = np.asarray(a["confusion_matrix"])
    names = list(a["per_class"])
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.imshow(cm, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} activity accuracy {a['accuracy']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def write_plots(run_dir: str | Path, history: list[dict], result: dict, which: str = "test") -> list[Path]:
    run_dir = Path(run_dir)
    out = []
    if history:
        out.append(plot_losses(history, run_dir / "loss_curves.png"))
    out.append(plot_iou(result, run_dir / f"iou_per_class_{which}.png", which))
    out.append(plot_confusion(result, run_dir / f"activity_confusion_{which}.png", which))
    return out
