"""The overlay a surgeon can read alone: on the class-colour blend, each instrument's box, axis, tip and id, the
activity and the frame's status burnt in at the top, a class legend at the bottom. Drawn in place with cv2
(well under a millisecond at 1080p)."""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .instruments import Instrument
from .status import FrameStatus

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_GREEN, _RED, _WHITE, _BLACK = (40, 200, 60), (235, 40, 40), (255, 255, 255), (0, 0, 0)


def _scale(image: np.ndarray) -> tuple[float, int]:
    """(font scale, line thickness) for the image's size: readable from 256-px frames to 4K."""
    s = min(image.shape[:2]) / 720.0
    return max(0.35, 0.75 * s), max(1, round(2 * s))


def _text(image, text: str, org: tuple[int, int], scale: float, thick: int, color=_WHITE) -> int:
    """Text with a dark box behind it, so it reads on any background; returns the box's height."""
    (w, h), base = cv2.getTextSize(text, _FONT, scale, thick)
    x, y = org
    cv2.rectangle(image, (x - 2, y - h - 3), (x + w + 2, y + base + 1), _BLACK, -1)
    cv2.putText(image, text, (x, y), _FONT, scale, color, thick, cv2.LINE_AA)
    return h + base + 6


def draw_instruments(image: np.ndarray, instruments: Sequence[Instrument], names: Sequence[str],
                     colors: np.ndarray) -> None:
    scale, thick = _scale(image)
    r = max(3, round(6 * scale))
    for inst in instruments:
        color = tuple(int(c) for c in colors[inst.class_id])
        x, y, w, h = inst.bbox
        cv2.rectangle(image, (x, y), (x + w - 1, y + h - 1), color, thick)
        entry = tuple(int(round(v)) for v in inst.entry)
        tip = tuple(int(round(v)) for v in inst.tip)
        cv2.line(image, entry, tip, _WHITE, max(1, thick // 2), cv2.LINE_AA)
        cv2.rectangle(image, (entry[0] - r, entry[1] - r), (entry[0] + r, entry[1] + r), _WHITE, thick)
        cv2.circle(image, tip, r + thick, _BLACK, -1, cv2.LINE_AA)
        cv2.circle(image, tip, r, _WHITE, -1, cv2.LINE_AA)
        label = f"#{inst.id} {names[inst.class_id] if inst.class_id < len(names) else inst.class_id}"
        if inst.confidence == inst.confidence:  # not NaN
            label += f" {inst.confidence:.2f}"
        _text(image, label, (x + 2, max(y - 4, 12)), scale * 0.8, thick, color)


def draw_header(image: np.ndarray, activity: str, confidence: float, status: FrameStatus | None) -> None:
    """The activity and the status, top left."""
    scale, thick = _scale(image)
    y = 8 + _text(image, f"{activity} {confidence:.2f}", (8, 8 + int(30 * scale)), scale, thick)
    if status is not None:
        text = "usable" if status.usable else "NOT USABLE: " + ", ".join(n.lower() for n in status.flag_names)
        _text(image, text, (8, y + int(26 * scale)), scale * 0.8, thick, _GREEN if status.usable else _RED)


def draw_legend(image: np.ndarray, names: Sequence[str], colors: np.ndarray) -> None:
    """Colour swatch and name of every class but the background (id 0), bottom left, on one dark panel."""
    scale, thick = _scale(image)
    font, thin = scale * 0.7, max(1, thick - 1)
    sizes = [cv2.getTextSize(n, _FONT, font, thin)[0] for n in names[1:]]
    if not sizes:
        return
    step = max(h for _, h in sizes) + max(4, round(8 * scale))
    box = step - max(3, round(6 * scale))
    y0 = image.shape[0] - 6 - step * len(sizes)
    cv2.rectangle(image, (4, y0), (12 + box + max(w for w, _ in sizes), image.shape[0] - 4), _BLACK, -1)
    for i, name in enumerate(names[1:], start=1):
        y = y0 + step * i
        cv2.rectangle(image, (8, y - box), (8 + box, y), tuple(int(c) for c in colors[i]), -1)
        cv2.putText(image, name, (12 + box, y), _FONT, font, _WHITE, thin, cv2.LINE_AA)


def annotate(image: np.ndarray, *, instruments: Sequence[Instrument], status: FrameStatus | None, activity: str,
             confidence: float, names: Sequence[str], colors: np.ndarray) -> np.ndarray:
    """Everything above drawn onto ``image`` (uint8 RGB, modified in place and returned)."""
    draw_instruments(image, instruments, names, colors)
    draw_header(image, activity, confidence, status)
    draw_legend(image, names, colors)
    return image
