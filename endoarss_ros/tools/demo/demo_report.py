"""The demo's summary: what it prints at the end and the list of files it wrote."""
from __future__ import annotations

from pathlib import Path

from endoarss_ros.bag.replay_report import temporal_lines


def output_files(out: Path, *, offline: bool, video: bool) -> dict:
    """Where the demo's outputs are (None for what this run did not write)."""
    return {
        "recording": str(out / "recording"),
        "output_bag": str(out / "endoarss_output_bag") if offline else None,
        "timeline": str(out / "timeline.png") if offline else None,
        "video": str(out / "overlay.mp4") if offline and video else None,
        "summary": str(out / "summary.json"),
        "replay_summary": str(out / "replay_summary.json") if offline else None,
        "node_log": str(out / "node.log"),
    }


def _pct(v):
    return "n/a" if v is None else f"{v:.1%}"


def _ms(v):
    return "n/a" if v is None else f"{v:.0f} ms"


def _print_status(label: str, st: dict | None, ages: dict | None = None) -> None:
    if not st or not st.get("frames"):
        return
    flags = ", ".join(f"{name.lower()} {n}" for name, n in st["flags"].items() if n) or "none"
    age = f"; result age p50 {_ms(ages.get('p50'))}, p95 {_ms(ages.get('p95'))}" if ages else ""
    print(f"  {label:<18} {st['usable']} of {st['frames']} frames usable ({_pct(st['usable_fraction'])}); "
          f"flags: {flags}{age}")


def _print_instruments(label: str, tr: dict | None) -> None:
    if not tr or not tr.get("frames"):
        return
    per_class = ", ".join(f"{name} {c['tracks']} (longest {c['longest_track_s']:.1f} s)"
                          for name, c in tr["per_class"].items())
    print(f"  {label:<18} {tr['tracks']} tracks over {tr['frames']} frames, {tr['instances_per_frame']} per "
          f"frame: {per_class or 'none'}")


def print_summary(s: dict) -> None:
    live, off, files = s["live"], s.get("offline") or {}, s["files"]
    gt = off.get("ground_truth") or {}
    rec = s["recording"]
    w = 78
    print("=" * w)
    print(f"EndoARSS demo summary ({s['runtime_s']:.0f} s)")
    print(f"  recording          {rec['frames']} frames, {rec['params']['size'][1]}x{rec['params']['size'][0]} "
          f"at {rec['params']['fps']:g} fps ({'reused' if rec['reused'] else 'generated'})")
    print(f"  live (node)        published {live.get('frames_published')}, received by the node "
          f"{live.get('frames_received_by_node')}, processed {live.get('frames_processed_by_node')}, dropped "
          f"{live.get('frames_dropped_by_node')} (newest-frame policy); activity messages received "
          f"{live.get('activity_messages_received')}")
    lat, e2e = live.get("node_latency_ms", {}), live.get("end_to_end_latency_ms", {})
    print(f"  node latency       p50 {_ms(lat.get('p50'))}, p95 {_ms(lat.get('p95'))} (diagnostics); end to end "
          f"p50 {_ms(e2e.get('p50'))}, p95 {_ms(e2e.get('p95'))}")
    print(f"  live vs truth      activity accuracy {_pct(live.get('activity_accuracy'))} over "
          f"{live.get('frames_evaluated')} frames, foreground mIoU {_pct(live.get('miou_foreground'))}")
    if off:
        print(f"  offline (all)      frames in {off['frames_in']} {'==' if off['frames_in_equals_out'] else '!='} "
              f"out {off['frames_out']}, {off['throughput']['inference_frames_per_s']} frames/s; activity accuracy "
              f"{_pct(gt.get('activity_accuracy'))}, foreground mIoU {_pct(gt.get('miou_foreground'))}")
    sources = ", ".join(f"{name} {n}" for name, n in sorted((live.get("activity_sources") or {}).items()))
    print(f"  activity model     {s.get('temporal_model') or 'none: frame-wise + EMA'}; live labels by source: "
          f"{sources or 'none'}")
    for line in temporal_lines(off.get("temporal")):
        print(f"  offline {line}")
    _print_status("live status", live.get("status"), live.get("result_age_ms"))
    _print_instruments("live instruments", live.get("instruments"))
    if off:
        _print_status("offline status", off.get("status"))
        _print_instruments("offline instrum.", off.get("instruments"))
        by_status = gt.get("by_status") or {}
        if by_status.get("unusable", {}).get("frames_with_activity"):
            u, n = by_status["usable"], by_status["unusable"]
            print(f"  usable vs not      activity accuracy {_pct(u.get('activity_accuracy'))} vs "
                  f"{_pct(n.get('activity_accuracy'))}, foreground mIoU {_pct(u.get('miou_foreground'))} vs "
                  f"{_pct(n.get('miou_foreground'))} ({u['frames_with_activity']} / "
                  f"{n['frames_with_activity']} frames)")
    print(f"  output bag         {files.get('output_bag')}")
    print(f"  timeline plot      {files.get('timeline')}")
    print(f"  overlay video      {files.get('video')}")
    print(f"  summary            {files.get('summary')}")
    print(f"  node log           {files.get('node_log')}")
    print("=" * w)
    if not s["ok"]:
        print("FAILED: the perception node produced no activity messages")
