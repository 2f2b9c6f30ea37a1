"""``aggregate.png``: one picture of an archive, the same size whatever the number of recordings (3 or 10,000).

Per figure of ``archive_report.FIGURES`` a histogram of the recordings (with its median) and, beside it, the worst
recordings named; a panel of the failed recordings by reason, with the first few named; the overall figures in the
title. A panel whose figure needs ground truth says so when no recording has any. Text from recordings (names,
errors) is drawn as plain text (no mathtext)."""
from __future__ import annotations

import io
from collections import Counter

import numpy as np

from .archive_report import FIGURES, Figure, error_kind, is_number, worst

SIZE_IN = (16.0, 10.0)  # inches at DPI: 1600 x 1000 pixels
DPI = 100
LISTED = 8  # recordings named per panel
NAME_CHARS = 30
ERROR_CHARS = 36  # what a list's column holds at this size
WORST_COLOR, FAILED_COLOR, OK_COLOR = "#c0392b", "crimson", "#2e7d32"


def _clip(text: str, chars: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= chars else text[: chars - 1] + "\u2026"


def _integers():
    """Ticks on whole numbers (counts); imported here, after ``pyplot()`` has set matplotlib's config folder."""
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _bins(figure: Figure, values: np.ndarray):
    if figure.fraction:
        return np.linspace(0.0, 1.0, 21)
    if figure.key == "frames_failed" and values.max() <= 40:
        return np.arange(-0.5, values.max() + 1.5)
    return min(40, max(5, int(np.sqrt(len(values))))) if values.max() > values.min() else 5


def _text(ax, lines: list[tuple[str, str]], title: str) -> None:
    """A column of (text, color) lines under ``title`` in an axis without frame."""
    ax.set_axis_off()
    ax.text(0.0, 1.0, title, transform=ax.transAxes, va="top", fontsize=9, fontweight="bold", parse_math=False)
    for i, (line, color) in enumerate(lines):
        ax.text(0.0, 0.88 - i * 0.105, line, transform=ax.transAxes, va="top", fontsize=8, family="monospace",
                color=color, parse_math=False)


def _distribution(ax, ax_list, figure: Figure, report: dict) -> None:
    rows = [r for r in report["recordings"] if r["status"] == "ok"]
    values = np.array([r[figure.key] for r in rows if is_number(r.get(figure.key))], float)
    if not len(values):
        why = ("no recording has ground truth: this needs recordings with ground-truth topics" if figure.needs_truth
               else "no finished recording")
        ax.set_axis_off()
        ax.set_title(figure.label, fontsize=10)
        ax.text(0.5, 0.5, why, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="gray",
                wrap=True)
        ax_list.set_axis_off()
        return
    ax.hist(values, bins=_bins(figure, values), color="#4c72b0", edgecolor="white")
    median = float(np.median(values))
    ax.axvline(median, color="black", ls="--", lw=1)
    if figure.key == "frames_failed":
        ax.set_yscale("symlog", linthresh=1)
        ax.xaxis.set_major_locator(_integers())
        ax.set_xlim(-0.5, max(float(values.max()), 5.0) + 0.5)
    else:
        ax.yaxis.set_major_locator(_integers())
    if figure.fraction:
        ax.set_xlim(0, 1)
        ax.xaxis.set_major_formatter(lambda x, _: f"{x:.0%}")
    covered = f", {len(values):,} of {len(rows):,} with ground truth" if figure.needs_truth else ""
    ax.set_title(f"{figure.label}: median {figure.show(median)}{covered}", fontsize=10)
    ax.set_ylabel("recordings", fontsize=8)
    ax.tick_params(labelsize=8)
    named = worst(report["recordings"], figure, LISTED - 3 if figure.key == "frames_failed" else LISTED)
    lines = [(f"{_clip(n, NAME_CHARS):<{NAME_CHARS}} {figure.show(v):>7}", WORST_COLOR) for n, v in named]
    title = "worst: highest" if not figure.low_is_bad else "worst: lowest"
    if figure.key == "frames_failed":
        reasons = report["overall"]["failure_reasons"]
        lines = lines or [("no frame failed", OK_COLOR)]
        lines += [(_clip(f"{k}: {v:,} frames in all", NAME_CHARS + 8), "dimgray")
                  for k, v in Counter(reasons).most_common(LISTED + 1 - len(lines))]
    _text(ax_list, lines, title)


def _failures(ax, ax_list, report: dict) -> None:
    failed = report["failed"]
    ax.set_title(f"failed recordings: {len(failed):,}", fontsize=10)
    if not failed:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no recording failed", transform=ax.transAxes, ha="center", va="center",
                fontsize=11, color=OK_COLOR)
        ax_list.set_axis_off()
        return
    kinds = [(_clip(k, 24), n) for k, n in Counter(error_kind(f["error"]) for f in failed).most_common(LISTED)]
    ax.barh(range(len(kinds)), [n for _, n in kinds], color=FAILED_COLOR)
    ax.set_yticks(range(len(kinds)), [k for k, _ in kinds], fontsize=8)
    for label in ax.get_yticklabels():
        label.set_parse_math(False)
    ax.invert_yaxis()
    ax.set_xlabel("recordings", fontsize=8)
    ax.xaxis.set_major_locator(_integers())
    ax.tick_params(axis="x", labelsize=8)
    listed = failed[: LISTED // 2]  # a line for the name, one for the reason
    lines = [line for f in listed for line in ((_clip(f["name"], ERROR_CHARS), FAILED_COLOR),
                                               (_clip(f"  {f['error']}", ERROR_CHARS), "dimgray"))]
    if len(failed) > len(listed):
        lines.append((f"... and {len(failed) - len(listed):,} more (report.html)", "black"))
    _text(ax_list, lines, "failed, with their reason")


def _title(o: dict) -> str:
    parts = [f"{o['recordings']:,} recordings: {o['finished']:,} finished, {o['failed']:,} failed",
             f"frames {o['frames_in']:,} in, {o['frames_out']:,} out, {o['frames_failed']:,} failed"]
    second = []
    if o["activity_accuracy"] is not None:
        second.append(f"activity accuracy {o['activity_accuracy']:.1%}")
    if o["miou_foreground_mask_weighted"] is not None:
        second.append(f"foreground mIoU {o['miou_foreground_mask_weighted']:.1%}")
    if o["activity_accuracy"] is None and o["miou_foreground_mask_weighted"] is None:
        second.append("no ground truth")
    if o["usable_fraction"] is not None:
        second.append(f"usable {o['usable_fraction']:.1%}")
    if o["frames_per_s"] is not None:
        second.append(f"{o['frames_per_s']:,.1f} frames/s per replayer")
    return " | ".join(parts) + "\n" + " | ".join(second)


def draw(report: dict):
    """The picture as a matplotlib figure, ``SIZE_IN`` at ``DPI`` whatever the number of recordings."""
    from ..files import pyplot

    fig = pyplot().figure(figsize=SIZE_IN, dpi=DPI)
    grid = fig.add_gridspec(3, 4, width_ratios=[2.2, 1.5, 2.2, 1.5], left=0.04, right=0.99, bottom=0.05,
                            top=0.88, hspace=0.45, wspace=0.25)
    cells = [(fig.add_subplot(grid[i // 2, 2 * (i % 2)]), fig.add_subplot(grid[i // 2, 2 * (i % 2) + 1]))
             for i in range(6)]
    for (ax, ax_list), figure in zip(cells, FIGURES):
        _distribution(ax, ax_list, figure, report)
    _failures(*cells[len(FIGURES)], report)
    fig.suptitle(_title(report["overall"]), fontsize=12)
    return fig


def render_picture(report: dict) -> bytes:
    """The picture as PNG bytes."""
    from ..files import pyplot

    fig = draw(report)
    try:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI)
        return buf.getvalue()
    finally:
        pyplot().close(fig)
