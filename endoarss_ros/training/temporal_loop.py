"""Training the causal temporal activity model (``model.temporal_tcn.CausalTCN``) on cached frame features.

Each epoch draws a fresh augmented copy of every training video:

* frames: a random start (the node may start mid-case), a fraction dropped at random and a gap of up to
  ``max_gap_s`` cut out, then turned into ticks by the node's clock (``model.temporal_clock.ticks_from_frames``):
  dropped and gap ticks get the missing flag exactly as in the node;
* ticks: resampled in speed (x``speed``), Gaussian noise on the normalised features and whole feature channels
  dropped: a guard against trusting frame features too much (on the frame model's own training videos they are
  too good; ``docs/temporal.md`` has what this measured).

Loss per stage: cross-entropy with median-frequency class weights plus MS-TCN's truncated-MSE smoothing
(``smooth_weight``, ``smooth_tau``). Model selection on the validation videos only, streamed frame by frame as
the node runs (given by the caller: ``bag.temporal_scoring``); the evidence threshold of the session's decision
is then chosen on the same validation videos and saved with the weights.
"""
from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..model.temporal_clock import DEFAULT_SWITCH_EVIDENCE, ticks_from_frames
from ..model.temporal_tcn import CausalTCN, TemporalBinding, TemporalConfig, save_temporal

IGNORE = -1
# ``validate(model, binding, switch_evidence) -> {method: summary}``: validation scores streamed as the node runs
# (``bag.temporal_scoring.validation_scorer``). Videos: anything with stamps, features, usable, labels (N,) arrays.
SWITCH_EVIDENCE_GRID = (0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0)


@dataclass(frozen=True)
class TemporalTrainSettings:
    epochs: int = 60
    batch: int = 4
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    tick_s: float = 1.0  # the model's clock (1 Hz, as TeCNO and AI-Endo); saved in its binding
    channels: int = 32
    layers: int = 9
    stages: int = 2
    refine_channels: int = 16
    dropout: float = 0.2
    smooth_weight: float = 0.15
    smooth_tau: float = 4.0
    speed: tuple[float, float] = (0.7, 1.5)
    drop: float = 0.2  # up to this fraction of frames dropped at random
    gap_p: float = 0.5  # probability of a gap per video and epoch
    max_gap_s: float = 45.0
    crop_p: float = 0.5  # probability of a random start
    feature_noise: float = 0.3  # std of Gaussian noise on normalised features
    channel_drop: float = 0.1  # probability of zeroing a feature channel (per video and epoch)
    validate_every: int = 5

    def config(self, feature_dim: int, num_classes: int) -> TemporalConfig:
        return TemporalConfig(feature_dim, num_classes, channels=self.channels, layers=self.layers,
                              stages=self.stages, dropout=self.dropout, refine_channels=self.refine_channels)


def tick_labels(stamps: np.ndarray, labels: np.ndarray, tick_s: float, num_classes: int) -> np.ndarray:
    """Majority label of each tick's labelled frames (all frames, dropped or not: the truth goes on), or IGNORE."""
    onehot = np.zeros((len(labels), num_classes), np.float32)
    ok = labels >= 0
    onehot[np.flatnonzero(ok), labels[ok]] = 1.0
    mean, missing, _ = ticks_from_frames(stamps, onehot, ok, tick_s)
    return np.where(missing, IGNORE, mean.argmax(1)).astype(np.int64)


def median_frequency_weights(videos: Sequence, num_classes: int) -> np.ndarray:
    counts = np.zeros(num_classes, np.float64)
    for v in videos:
        counts += np.bincount(v.labels[v.labels >= 0], minlength=num_classes)[:num_classes]
    freq = counts / max(counts.sum(), 1.0)
    present = freq > 0
    w = np.zeros(num_classes)
    w[present] = np.median(freq[present]) / freq[present]
    return w.astype(np.float32)


def augmented_ticks(v, rng: np.random.Generator, s: TemporalTrainSettings, num_classes: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features (T, D), missing (T,), labels (T,)) of one augmented pass over a video."""
    n = len(v.stamps)
    start = int(rng.integers(0, n // 2)) if n > 4 and rng.random() < s.crop_p else 0
    stamps, labels = v.stamps[start:], v.labels[start:]
    keep = rng.random(len(stamps)) >= rng.uniform(0, s.drop)
    if rng.random() < s.gap_p and stamps[-1] - stamps[0] > s.max_gap_s + 10:
        g0 = rng.uniform(stamps[0] + 5, stamps[-1] - s.max_gap_s)
        keep &= ~((stamps >= g0) & (stamps < g0 + rng.uniform(2.0, s.max_gap_s)))
    keep[0] = True
    feats, missing, _ = ticks_from_frames(stamps[keep], v.features[start:][keep], v.usable[start:][keep], s.tick_s)
    target = tick_labels(stamps, labels, s.tick_s, num_classes)
    target = np.pad(target, (0, max(0, len(feats) - len(target))), constant_values=IGNORE)[: len(feats)]
    speed = rng.uniform(*s.speed)
    pick = np.minimum(np.round(np.arange(0, len(feats), speed)).astype(np.int64), len(feats) - 1)
    return feats[pick], missing[pick], target[pick]


def _batch(items, model: CausalTCN, rng: np.random.Generator, s: TemporalTrainSettings):
    T = max(len(f) for f, _, _ in items)
    D = items[0][0].shape[1]
    x = np.zeros((len(items), T, D), np.float32)
    m = np.ones((len(items), T), bool)
    y = np.full((len(items), T), IGNORE, np.int64)
    for b, (f, miss, lab) in enumerate(items):
        x[b, : len(f)], m[b, : len(f)], y[b, : len(f)] = f, miss, lab
    # Noise and channel dropout in normalised units, applied to raw features through the model's scale.
    std = model.feature_std.numpy()
    noise = rng.standard_normal(x.shape).astype(np.float32) * s.feature_noise * std
    keep = (rng.random((len(items), 1, D)) >= s.channel_drop).astype(np.float32)
    mean = model.feature_mean.numpy()
    x = (x + noise - mean) * keep + mean
    return torch.from_numpy(x), torch.from_numpy(m), torch.from_numpy(y)


def temporal_loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, s: TemporalTrainSettings
                  ) -> torch.Tensor:
    """Sum over stages of weighted cross-entropy + smooth_weight x truncated MSE of log-probability changes."""
    total = logits.new_zeros(())
    for stage in logits:  # (B, T, K)
        total = total + F.cross_entropy(stage.reshape(-1, stage.shape[-1]), target.reshape(-1), weight=weights,
                                        ignore_index=IGNORE)
        logp = F.log_softmax(stage, -1)
        diff = (logp[:, 1:] - logp[:, :-1].detach()) ** 2
        total = total + s.smooth_weight * diff.clamp(max=s.smooth_tau ** 2).mean()
    return total


def selection_score(summary: dict) -> float:
    """Validation score for choosing epochs and the evidence threshold: mean of accuracy, F1@25 and F1@50, less
    0.1 per false transition per minute."""
    return (summary["accuracy"] + summary["f1@25"] + summary["f1@50"]) / 3 - 0.1 * summary["false_transitions_per_min"]


def _binding(model, names, classes, model_id, s: TemporalTrainSettings, evidence: float, notes: dict):
    return TemporalBinding(model_id, tuple(classes), tuple(names), s.tick_s, model.config,
                           session_settings={"switch_evidence": evidence}, notes=notes)


def train_temporal(train: Sequence, validate, *, feature_names: Sequence[str],
                   class_names: Sequence[str], frame_model_id: str, run_dir: str | Path,
                   settings: TemporalTrainSettings = TemporalTrainSettings(), notes: dict | None = None,
                   log: Callable[[str], None] = print) -> dict:
    """Train, select with ``validate`` (validation videos only), write the run folder; returns the final record
    (``metrics.json``). ``validate``: see the module's top."""
    s, run_dir = settings, Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not train:
        raise ValueError("train-temporal needs training videos")
    K, D = len(class_names), len(feature_names)
    torch.manual_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    model = CausalTCN(s.config(D, K))
    allf = np.concatenate([v.features[v.usable] if v.usable.any() else v.features for v in train])
    model.set_feature_normalization(allf.mean(0), allf.std(0))
    weights = torch.from_numpy(median_frequency_weights(train, K))
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, s.epochs))
    (run_dir / "config.json").write_text(json.dumps({"settings": dataclasses.asdict(s), "classes": list(class_names),
                                                     "feature_names": list(feature_names), "frame_model_id":
                                                     frame_model_id, "train_videos": [v.name for v in train],
                                                     "class_weights": weights.tolist()}, indent=1))
    history, best, best_state = [], None, None
    for epoch in range(1, s.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        order = rng.permutation(len(train))
        losses = []
        for b0 in range(0, len(order), s.batch):
            items = [augmented_ticks(train[i], rng, s, K) for i in order[b0:b0 + s.batch]]
            x, m, y = _batch(items, model, rng, s)
            loss = temporal_loss(model(x, m), y, weights, s)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        sched.step()
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)), "seconds": time.perf_counter() - t0}
        if epoch % s.validate_every == 0 or epoch == s.epochs:
            model.eval()
            binding = _binding(model, feature_names, class_names, frame_model_id, s, DEFAULT_SWITCH_EVIDENCE, {})
            record["val"] = validate(model, binding, DEFAULT_SWITCH_EVIDENCE)
            record["val_score"] = selection_score(record["val"]["temporal"])
            if best is None or record["val_score"] > best["val_score"]:
                best = record
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
            v = record["val"]["temporal"]
            log(f"epoch {epoch}: loss {record['train_loss']:.3f}  val acc {v['accuracy']:.3f}  F1@50 "
                f"{v['f1@50']:.3f}  FTPM {v['false_transitions_per_min']:.2f}  score {record['val_score']:.3f}")
        history.append(record)
        (run_dir / "metrics.json").write_text(json.dumps({"epochs": history, "best": best}, indent=1))
    model.load_state_dict(best_state)
    model.eval()
    return _finish(model, validate, feature_names, class_names, frame_model_id, s, history, best, run_dir, notes or {},
                   log)


def _finish(model, validate, feature_names, class_names, frame_model_id, s, history, best, run_dir: Path, notes, log):
    """Choose the evidence threshold on validation, save the bound model, metrics and plots."""
    tuning = []
    for evidence in SWITCH_EVIDENCE_GRID:
        binding = _binding(model, feature_names, class_names, frame_model_id, s, evidence, {})
        summary = validate(model, binding, evidence)["temporal"]
        tuning.append({"switch_evidence": evidence, "score": selection_score(summary), "val": summary})
    chosen = max(tuning, key=lambda t: t["score"])
    log(f"selected epoch {best['epoch']}, switch_evidence {chosen['switch_evidence']} (validation score "
        f"{chosen['score']:.3f})")
    binding = _binding(model, feature_names, class_names, frame_model_id, s, chosen["switch_evidence"],
                       {**notes, "selected_epoch": best["epoch"]})
    weights = save_temporal(run_dir / "temporal.safetensors", model, binding)
    record = {"selection": "validation only: score = (accuracy + F1@25 + F1@50) / 3 - 0.1 x FTPM, streamed as the "
                           "node runs; then switch_evidence on the same validation videos",
              "best_epoch": best["epoch"], "switch_evidence": chosen["switch_evidence"], "evidence_tuning": tuning,
              "best": best, "epochs": history, "weights": str(weights)}
    (run_dir / "metrics.json").write_text(json.dumps(record, indent=1))
    try:
        from .temporal_plots import plot_training

        plot_training(history, run_dir / "training.png")
    except Exception as e:  # noqa: BLE001 - plots are a convenience: never fail a finished run on them
        log(f"plots skipped: {e}")
    return record
