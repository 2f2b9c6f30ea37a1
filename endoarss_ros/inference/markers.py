"""RViz markers of the instruments in 3D: ``visualization_msgs/MarkerArray`` field values (see message_fields).

Per instrument with 3D (``Instrument3D.has_3d``), three markers share the instrument's id as marker id, in three
namespaces: ``<ns>/shaft`` an ARROW from the entry point to the tip, ``<ns>/tip`` a SPHERE at the tip and
``<ns>/label`` a TEXT_VIEW_FACING "id class  tip-to-tissue mm" above the tip. All are in the header's frame (the
left camera's optical frame), with a ``lifetime`` so that a lost DELETE cannot leave a stale marker behind; an id
shown in an earlier call and absent now gets DELETE markers in all three namespaces.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

MARKERS_TYPE = "visualization_msgs/msg/MarkerArray"
MARKERS_TOPIC = "instruments/markers"  # relative to the camera's namespace
NAMESPACE = "endoarss_instruments"
ARROW, SPHERE, TEXT_VIEW_FACING = 0, 2, 9
ADD, DELETE = 0, 2
SHAFT_DIAMETER_M = 0.0025
TIP_DIAMETER_M = 0.003
TEXT_HEIGHT_M = 0.004
LIFETIME_S = 0.5


def _xyz(v) -> dict:
    return {"x": float(v[0]), "y": float(v[1]), "z": float(v[2])}


def _color(rgb, alpha: float = 1.0) -> dict:
    r, g, b = (float(c) / 255.0 for c in rgb)
    return {"r": r, "g": g, "b": b, "a": float(alpha)}


def _marker(header, ns: str, marker_id: int, kind: int, action: int, *, position=(0.0, 0.0, 0.0),
            scale=(0.0, 0.0, 0.0), color=(255, 255, 255), points=(), text: str = "",
            lifetime_s: float = LIFETIME_S) -> dict:
    """All the fields of one ``visualization_msgs/Marker`` (bag writers need every field)."""
    seconds = int(math.floor(lifetime_s))
    return {"header": header, "ns": ns, "id": int(marker_id), "type": int(kind), "action": int(action),
            "pose": {"position": _xyz(position), "orientation": {"x": 0.0, "y": 0.0, "z": 0.0, "w": 1.0}},
            "scale": _xyz(scale), "color": _color(color),
            "lifetime": {"sec": seconds, "nanosec": int(round((lifetime_s - seconds) * 1e9))},
            "frame_locked": False, "points": [_xyz(p) for p in points], "colors": [],
            "texture_resource": "", "texture": {"header": header, "format": "", "data": np.zeros(0, np.uint8)},
            "uv_coordinates": [], "text": text, "mesh_resource": "",
            "mesh_file": {"filename": "", "data": np.zeros(0, np.uint8)}, "mesh_use_embedded_materials": False}


def marker_label(instrument, geometry, class_names: Sequence[str]) -> str:
    """``"<id> <class>  <tip-to-tissue> mm"`` (``?`` when the distance is unknown)."""
    c = instrument.class_id
    name = class_names[c] if c < len(class_names) else str(c)
    distance = geometry.tip_to_tissue
    text = f"{distance * 1000:.1f} mm" if math.isfinite(distance) else "? mm"
    return f"{instrument.id} {name}  {text}"


def instrument_marker_fields(header, instruments, geometry, class_names: Sequence[str], shown_ids: set[int], *,
                             colors=None, lifetime_s: float = LIFETIME_S, ns: str = NAMESPACE
                             ) -> tuple[dict, set[int]]:
    """(``MarkerArray`` fields, the ids shown now). ``geometry``: the instruments' ``Instrument3D`` (aligned);
    ``shown_ids``: what the previous call returned; ``colors``: (C, 3) uint8 RGB per class (white if None)."""
    markers, shown = [], set()
    for instrument, g in zip(instruments, geometry):
        if not g.has_3d:
            continue
        i = int(instrument.id)
        rgb = tuple(colors[instrument.class_id]) if colors is not None else (255, 255, 255)
        tip, entry = np.asarray(g.tip_3d, float), np.asarray(g.entry_3d, float)
        markers.append(_marker(header, f"{ns}/shaft", i, ARROW, ADD, points=(entry, tip), color=rgb,
                               scale=(SHAFT_DIAMETER_M, 2 * SHAFT_DIAMETER_M, 2 * SHAFT_DIAMETER_M),
                               lifetime_s=lifetime_s))
        markers.append(_marker(header, f"{ns}/tip", i, SPHERE, ADD, position=tip, color=rgb,
                               scale=(TIP_DIAMETER_M,) * 3, lifetime_s=lifetime_s))
        label_at = tip - np.array([0.0, 2 * TEXT_HEIGHT_M, 0.0])  # above the tip: y is down
        markers.append(_marker(header, f"{ns}/label", i, TEXT_VIEW_FACING, ADD, position=label_at,
                               scale=(0.0, 0.0, TEXT_HEIGHT_M), text=marker_label(instrument, g, class_names),
                               lifetime_s=lifetime_s))
        shown.add(i)
    for i in sorted(set(shown_ids) - shown):
        markers.extend(_marker(header, f"{ns}/{part}", i, ARROW, DELETE) for part in ("shaft", "tip", "label"))
    return {"markers": markers}, shown
