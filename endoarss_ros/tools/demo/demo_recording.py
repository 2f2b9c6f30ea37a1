"""The demo's synthetic recording: a short synthetic procedure (``data.procedures``: marking, incision, dissection
with a return to incision, smoke; the kind of video the committed demo temporal model was trained on), generated
once with ground truth and reused while its parameters match."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from endoarss_ros.bag.partials import partial_name, remove_stale_partials

SEED = 7


def ensure_recording(out: Path, *, seconds: float, fps: float, size: tuple[int, int], seed: int = SEED,
                     log=print) -> tuple[Path, dict, bool]:
    """``out/recording`` with these parameters: reused when its ``recording.json`` matches, else regenerated
    (into a temporary folder renamed into place)."""
    from endoarss_ros.bag.synth_bag import write_procedure_bag
    from endoarss_ros.data.procedures import ProcedureSettings, make_procedure

    path = out / "recording"
    params_path = out / "recording.json"
    params = {"seconds": seconds, "fps": fps, "size": list(size), "encoding": "rgb8", "storage": "mcap",
              "seed": seed, "format": 2}
    if (path / "metadata.yaml").is_file() and params_path.is_file():
        try:
            if json.loads(params_path.read_text()).get("params") == params:
                return path, json.loads(params_path.read_text()), True
        except (OSError, ValueError):
            pass
    out.mkdir(parents=True, exist_ok=True)
    log(f"generating the synthetic recording {path} ({seconds:g} s at {fps:g} fps, {size[1]}x{size[0]}) ...")
    remove_stale_partials(out)  # of a demo killed while generating
    tmp = partial_name(path)
    try:
        procedure = make_procedure(seed, ProcedureSettings(minutes=seconds / 60.0, fps=fps, size=size))
        info = write_procedure_bag(tmp, procedure, encoding="rgb8", storage="mcap")
        # rosbags names the storage file after the folder: rename it so the finished bag is self-consistent.
        _rename_bag(tmp, "recording")
        shutil.rmtree(path, ignore_errors=True)
        params_path.unlink(missing_ok=True)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    record = {"params": params, "frames": info.frames, "start_ns": info.start_ns, "topics": info.topics,
              "procedure": procedure.description()}
    params_path.write_text(json.dumps(record, indent=2) + "\n")
    return path, record, False


def _rename_bag(folder: Path, name: str) -> None:
    """Rename a rosbags-written bag's storage file to ``name.<ext>`` and fix its metadata.yaml."""
    meta_path = folder / "metadata.yaml"
    text = meta_path.read_text()
    for f in folder.iterdir():
        if f.suffix in (".mcap", ".db3") and f.stem != name:
            f.rename(folder / f"{name}{f.suffix}")
            text = text.replace(f.name, f"{name}{f.suffix}")
    meta_path.write_text(text)
