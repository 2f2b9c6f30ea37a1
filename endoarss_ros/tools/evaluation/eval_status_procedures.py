"""``endoarss eval-status --procedures``: do the image flags agree with where the renderer degraded a procedure?

Synthetic procedures (``data.procedures``) know, frame by frame, where they put smoke, blood and lens cleaning
(blur and a pale wash): their ambiguous intervals. Scenes can also carry a light haze over the whole video
(``Scene.smoke_level``, 15-45 %) and blood pools on the tissue, which are part of the scene, not an event. Per
flag, precision and recall of the frames it flags against the frames the renderer degraded that way:

* what each interval draws (``data.procedures.degrade``): lens cleaning = a Gaussian blur of sigma 1 + 6 % of
  the frame's short side and a 55 % pale wash (blur and haze); smoke = ``corruptions.smoke`` at severity 2-3, a
  haze of up to 55-75 % plus a Gaussian blur of sigma 1.4-1.9 px at 256 rows (haze and blur); bleeding = blood
  blobs (blood). So ``BLUR`` is right on lens cleaning and smoke, ``SMOKE_OR_HAZE`` on smoke and lens cleaning,
  ``BLOOD_OR_SOILING`` on bleeding, and ``TOO_DARK`` never (procedures are never dark: every such flag is a false
  alarm); ``false_by_kind`` says on what the false alarms fell;
* ``any image flag`` against any of the three: the usable share the status reports vs the true clean share.

The scene's own haze is reported apart (``scene_haze``: the share of its frames flagged ``SMOKE_OR_HAZE``
outside the smoke intervals), with the measure's percentiles per truth kind, from which thresholds are set.
"""
from __future__ import annotations

import math

import numpy as np

from endoarss_ros.data.procedures import DEGRADING_KINDS
from endoarss_ros.inference.status import FLAG, IMAGE_FLAGS, StatusThresholds

FLAG_TRUTH = {"BLUR": ("lens_cleaning", "smoke"), "SMOKE_OR_HAZE": ("smoke", "lens_cleaning"),
              "BLOOD_OR_SOILING": ("bleeding",), "TOO_DARK": ()}
DEGRADING = DEGRADING_KINDS
PERCENTILE_MEASURES = ("haze", "sharpness", "blood_fraction", "brightness")


def demo_procedures(quick: bool = False):
    """The demo recording's procedure (``tools.demo.demo_recording``) with its settings: [(name, Procedure)]."""
    from endoarss_ros.data.procedures import ProcedureSettings, make_procedure
    from endoarss_ros.tools.demo.demo import QUICK
    from endoarss_ros.tools.demo.demo_recording import SEED

    seconds, fps = (QUICK["seconds"], QUICK["fps"]) if quick else (120.0, 4.0)
    return [("demo" + ("_quick" if quick else ""),
             make_procedure(SEED, ProcedureSettings(minutes=seconds / 60.0, fps=fps, size=(256, 320))))]


def held_out_procedures(seed: int, count: int, minutes: float = 3.0, fps: float = 0.5, size=(256, 320)):
    """Procedures ``numbered_procedure(seed, k)``, k < count, in the default mix."""
    from endoarss_ros.data.procedures import ProcedureSettings, numbered_procedure

    settings = ProcedureSettings(minutes=minutes, fps=fps, size=size)
    return [numbered_procedure(seed, k, settings) for k in range(count)]


def procedure_measures(procedures) -> list[dict]:
    """Per frame: the image measures and what the renderer did (``kind``: the ambiguity or None,
    ``scene_haze``: the scene's haze level)."""
    from endoarss_ros.inference import quality
    from endoarss_ros.inference.frames import frame_from_array

    rows = []
    for name, proc in procedures:
        scene, _ = proc.scene()
        for f in proc.frames():
            m = quality.measure(frame_from_array(f.rgb, "rgb8")).as_dict()
            rows.append({"procedure": name, "t": f.t, "kind": f.ambiguity, "scene_haze": scene.smoke_level,
                         "measures": m})
    return rows


def _pr(tp: int, fp: int, fn: int) -> dict:
    return {"true_positive": tp, "false_positive": fp, "false_negative": fn,
            "precision": round(tp / (tp + fp), 4) if tp + fp else None,
            "recall": round(tp / (tp + fn), 4) if tp + fn else None}


def agreement(rows: list[dict], thresholds: StatusThresholds) -> dict:
    """Per flag precision / recall against the renderer's truth; usable vs clean shares; the scene haze."""
    from endoarss_ros.inference.status import frame_status

    flags = [frame_status(r["measures"], thresholds).flags for r in rows]
    kinds = [r["kind"] for r in rows]
    out: dict = {"frames": len(rows), "flags": {}}
    for flag, truth in FLAG_TRUTH.items():
        hit = [bool(f & FLAG[flag]) for f in flags]
        real = [k in truth for k in kinds]
        out["flags"][flag] = _pr(sum(h and t for h, t in zip(hit, real)), sum(h and not t for h, t in zip(hit, real)),
                                 sum(t and not h for h, t in zip(hit, real)))
        out["flags"][flag]["flagged"] = sum(hit)
        out["flags"][flag]["false_by_kind"] = _count(k or "clean" for h, t, k in zip(hit, real, kinds) if h and not t)
    image = sum(FLAG[f] for f in IMAGE_FLAGS)
    any_hit = [bool(f & image) for f in flags]
    degraded = [k in DEGRADING for k in kinds]
    out["any_image_flag"] = _pr(sum(h and t for h, t in zip(any_hit, degraded)),
                                sum(h and not t for h, t in zip(any_hit, degraded)),
                                sum(t and not h for h, t in zip(any_hit, degraded)))
    out["true_clean_share"] = round(1 - float(np.mean(degraded)), 4) if rows else None
    out["image_usable_share"] = round(1 - float(np.mean(any_hit)), 4) if rows else None
    hazy = [bool(f & FLAG["SMOKE_OR_HAZE"]) for f, r in zip(flags, rows) if r["scene_haze"] > 0 and r["kind"] is None]
    out["scene_haze"] = {"clean_frames_in_hazy_scenes": len(hazy),
                         "flagged_smoke_or_haze": round(float(np.mean(hazy)), 4) if hazy else None}
    return out


def _count(items) -> dict[str, int]:
    c: dict[str, int] = {}
    for k in items:
        c[k] = c.get(k, 0) + 1
    return c


def percentiles(rows: list[dict]) -> dict:
    """1st / 50th / 99th percentile of the key measures per truth kind (``clean``, ``clean_hazy_scene``, ...)."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        key = r["kind"] or ("clean_hazy_scene" if r["scene_haze"] > 0 else "clean")
        groups.setdefault(key, []).append(r["measures"])
    return {k: {m: [round(float(np.percentile([v[m] for v in g], q)), 4) for q in (1, 50, 99)]
                for m in PERCENTILE_MEASURES if not math.isnan(g[0][m])} | {"frames": len(g)}
            for k, g in sorted(groups.items())}


def evaluate_procedures(thresholds: StatusThresholds, *, held_out_seed: int = 5100, count: int = 16,
                        log=print) -> dict:
    """The demo recording's procedure and ``count`` held-out procedures (set ``held_out_seed``, 1 fps,
    320x256): agreement of the flags with the renderer and the measures' percentiles."""
    out = {}
    for key, procs in (("demo", demo_procedures()), ("held_out", held_out_procedures(held_out_seed, count))):
        log(f"status flags vs the renderer on {key} procedures ...")
        rows = procedure_measures(procs)
        out[key] = {"procedures": [n for n, _ in procs], "agreement": agreement(rows, thresholds),
                    "percentiles": percentiles(rows)}
    return out
