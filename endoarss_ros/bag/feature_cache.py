"""Per-frame features of labelled videos for the temporal model, extracted once and cached per video.

One pass of the frame network (``InferenceEngine``) and the status (``CameraStream``) over every frame, as the
node computes them: the stream's features (``inference.temporal_features``), ``usable_for_temporal``, and the frame-wise
activity probabilities (the EMA baseline reads them). Nothing runs the backbone a second time.

Cache: one ``.npz`` per video in the cache folder, named by the video and a key made of the frame model's
identity, the feature layout and the video's fingerprint (file sizes and contents at both ends, the labels in
full), so another model, layout or an edited video is extracted again and finished videos are skipped (an
interrupted run resumes where it stopped). Files are written under a temporary name and renamed when complete.
"""
from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..files import write_atomic
from ..inference.frames import RawFrame
from ..inference.stream import CameraStream
from ..inference.temporal_features import feature_names, frame_model_identity, usable_for_temporal
from .labelled import FailedFrame, LabelledVideo

CACHE_VERSION = 3
_EDGE_BYTES = 1 << 20


@dataclass
class VideoFeatures:
    name: str
    stamps: np.ndarray  # float64 (N,) seconds
    features: np.ndarray  # float32 (N, D)
    usable: np.ndarray  # bool (N,): ``usable_for_temporal`` (what the session averages in)
    labels: np.ndarray  # int64 (N,), UNLABELLED where no label
    probs: np.ndarray  # float32 (N, K) frame-wise activity probabilities
    failed: dict[str, int] = field(default_factory=dict)  # frames that could not be decoded, by reason

    def failed_text(self) -> str:
        return failed_text(self.failed)


def failed_text(failed: dict[str, int]) -> str:
    """'frames failed: N (reason: count, ...)'."""
    reasons = ", ".join(f"{r}: {n}" for r, n in sorted(failed.items()))
    return f"frames failed: {sum(failed.values())}" + (f" ({reasons})" if reasons else "")


def fingerprint(files: Sequence[Path]) -> str:
    """Sizes, the first and last MiB of each file (videos can be large) and the names: 16 hex digits."""
    h = hashlib.sha256()
    for f in files:
        f = Path(f)
        size = f.stat().st_size
        h.update(f"{f.name}\0{size}\0".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(_EDGE_BYTES))
            if size > 2 * _EDGE_BYTES:
                fh.seek(size - _EDGE_BYTES)
                h.update(fh.read())
    return h.hexdigest()[:16]


def cache_key(model_id: str, names: Sequence[str], video_fingerprint: str) -> str:
    h = hashlib.sha256(f"{CACHE_VERSION}\0{model_id}\0{chr(0).join(names)}\0{video_fingerprint}".encode())
    return h.hexdigest()[:16]


class FeatureExtractor:
    """The frame model (an ``InferenceEngine`` over ``weights``) and the feature layout it produces."""

    def __init__(self, weights: str | Path, *, device: str = "cpu", batch: int = 8):
        from ..inference.engine import InferenceEngine

        self.weights = Path(weights)
        self.model_id = frame_model_identity(self.weights)
        self.engine = InferenceEngine(str(self.weights), device=device, max_batch=batch)
        self.seg_classes = list(self.engine.seg_classes)
        self.activity_classes = list(self.engine.activity_classes)
        self.feature_names = feature_names(self.seg_classes, self.activity_classes)

    def extract(self, video: LabelledVideo, progress=None) -> VideoFeatures:
        stream = CameraStream(self.seg_classes, self.activity_classes, self.engine.colors)
        rows: dict[str, list] = {"stamps": [], "features": [], "usable": [], "labels": [], "probs": []}
        batch: list[tuple[float, RawFrame, int]] = []
        failed: Counter = Counter()

        def flush() -> None:
            results = self.engine.infer([f for _, f, _ in batch])
            for (stamp, frame, label), result in zip(batch, results):
                out = stream.update(frame, result)  # the node's status and features of the frame
                rows["stamps"].append(stamp)
                rows["features"].append(out.features)
                rows["usable"].append(usable_for_temporal(out.status))
                rows["labels"].append(label)
                rows["probs"].append(np.asarray(result.activity_probs, np.float32))
            if progress is not None:
                progress(len(batch))
            batch.clear()

        for item in video.frames():
            if isinstance(item[1], FailedFrame):  # the tick gets no frame from it (a gap); counted
                failed[item[1].reason] += 1
                continue
            batch.append(item)
            if len(batch) == self.engine.max_batch:
                flush()
        if batch:
            flush()
        if not rows["stamps"]:
            raise ValueError(f"{video.name}: no frames could be read"
                             + (f" ({failed_text(failed)})" if failed else ""))
        K = len(self.activity_classes)
        return VideoFeatures(video.name, np.asarray(rows["stamps"], np.float64),
                             np.asarray(rows["features"], np.float32).reshape(len(rows["stamps"]), -1),
                             np.asarray(rows["usable"], bool), np.asarray(rows["labels"], np.int64),
                             np.asarray(rows["probs"], np.float32).reshape(-1, K), dict(failed))

    def cache_path(self, video: LabelledVideo, cache_dir: Path) -> Path:
        key = cache_key(self.model_id, self.feature_names, fingerprint(video.files) + video.variant)
        return cache_dir / f"{video.name}.{key}.npz"


def save_features(path: Path, f: VideoFeatures, model_id: str, names: Sequence[str]) -> None:
    write_atomic(path, lambda tmp: np.savez_compressed(
        tmp, stamps=f.stamps, features=f.features, usable=f.usable, labels=f.labels, probs=f.probs,
                        failed=np.array(json.dumps(f.failed)),
                        name=np.array(f.name), model_id=np.array(model_id), feature_names=np.array(list(names))))


def load_features(path: Path) -> VideoFeatures:
    with np.load(path, allow_pickle=False) as z:
        return VideoFeatures(str(z["name"]), z["stamps"], z["features"], z["usable"], z["labels"], z["probs"],
                             {str(k): int(v) for k, v in json.loads(str(z["failed"])).items()})


def cached_features(extractor: FeatureExtractor, videos: Sequence[LabelledVideo], cache_dir: str | Path, *,
                    log=print) -> list[VideoFeatures]:
    """Features of every video, extracting only those not in the cache (a progress bar on a terminal). Videos
    with frames that could not be decoded say how many, by reason (also when read from the cache)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for i, video in enumerate(videos):
        path = extractor.cache_path(video, cache_dir)
        if path.is_file():
            out.append(load_features(path))
            if out[-1].failed:
                log(f"features of {video.name} (cached): {out[-1].failed_text()}")
            continue
        log(f"features {i + 1}/{len(videos)}: {video.name}")
        bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=video.count, unit="frame", desc=video.name, leave=False)
        try:
            feats = extractor.extract(video, progress=bar.update if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()
        save_features(path, feats, extractor.model_id, extractor.feature_names)
        if feats.failed:
            log(f"features of {video.name}: {feats.failed_text()}")
        out.append(feats)
    return out
