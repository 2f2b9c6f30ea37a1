"""Train and evaluation loops; one process or many under ``torchrun`` (DistributedDataParallel).

Distributed runs read ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` from the environment ``torchrun`` sets
(backend NCCL on GPUs, gloo on CPU). Every rank seeds ``torch.manual_seed(seed + rank)`` (augmentation
differs per rank), DDP broadcasts rank 0's initial weights, a ``DistributedSampler`` shards the
training set, and only rank 0 evaluates, writes files and shows progress. The same command runs on one
CPU core or on eight GPUs.

Run folder ``out_dir/name/``: ``config.yaml``, ``classes.yaml``, ``metrics.json`` (per epoch),
``last.safetensors`` + ``trainer_state.pt`` (resume), ``best.safetensors`` (best validation score =
mean of activity accuracy and foreground mIoU), PNG plots, and ``test_metrics.json`` when a test split
exists (evaluated once, after training, with the best weights -- never used for selection).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from endoarss_ros.data.classes import MTLESD, ClassSet
from endoarss_ros.metrics.tracker import summary
from endoarss_ros.model import build_model, freeze_for_adapter_training, load_model, save_model

from .config import TrainConfig, build_model_config
from .data import build_split, build_train_val, dataset_class_set
from .distributed import barrier, gather_rng, init_distributed
from .evaluation import autocast, collate, evaluate, selection_score
from .losses import activity_loss, segmentation_loss
from .plots import write_plots
from .weighting import build_weighting, split_parameters

STATE_FILE = "trainer_state.pt"


# -- model -----------------------------------------------------------------------------------------
def build_training_model(cfg: TrainConfig, class_set: ClassSet | None = None) -> nn.Module:
    """The model a run trains: preset/YAML (+ overrides) with the data's class names, optional init weights."""
    mc = build_model_config(cfg)
    if class_set is not None:
        mc = mc.replace(seg_classes=list(class_set.seg_classes), activity_classes=list(class_set.activity_classes))
    if cfg.model.init:
        model = load_model(cfg.model.init, config=mc)
        model.train()
    else:
        model = build_model(mc)
    if cfg.freeze == "adapters":
        freeze_for_adapter_training(model)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    for name, p in model.named_parameters():
        if name.endswith("mask_token"):  # DINOv2's masked-image-modelling token: unused by EndoARSS
            p.requires_grad_(False)
    return model


def parameter_hash(model: nn.Module) -> str:
    """SHA-256 over all parameters and buffers (bytes, in name order): equal on ranks in sync."""

    h = hashlib.sha256()
    sd = getattr(model, "module", model).state_dict()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(sd[k].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# -- schedule ---------------------------------------------------------------------------------------
def _lr_lambda(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    o = cfg.optim
    total = max(1, cfg.epochs * steps_per_epoch)

    def f(step: int) -> float:
        warm = min(1.0, (step + 1) / o.warmup_steps) if o.warmup_steps > 0 else 1.0
        if o.scheduler == "cosine":
            t = min(1.0, step / total)
            decay = o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
        elif o.scheduler == "step":
            decay = o.gamma ** ((step // steps_per_epoch) // max(1, o.step_size))
        else:
            decay = 1.0
        return warm * decay

    return f


# -- training ---------------------------------------------------------------------------------------
def train(cfg: TrainConfig, *, resume: bool = False, log: Callable[[str], None] = print,
          stop_after: int | None = None) -> dict:
    """Run training as configured; returns the final record (also in ``run_dir/metrics.json``).

    ``resume``: continue from ``run_dir/last.safetensors`` + ``trainer_state.pt`` (bit-identical to an
    uninterrupted run on the same machine). ``stop_after``: leave after this many epochs of this call, as
    if interrupted (tests).
    """
    run = _Trainer(cfg, log)
    if resume:
        run.resume()
    run.log_start()
    end_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, run.start_epoch + stop_after)
    for epoch in range(run.start_epoch, end_epoch):
        record = run.train_epoch(epoch)
        run.end_epoch(epoch, record)
        barrier()
    if end_epoch < cfg.epochs:
        return {"run_dir": str(run.run_dir), "interrupted_after": end_epoch, "param_hash": parameter_hash(run.model)}
    return run.finish()


class _Trainer:
    """One training run: data, model, optimiser, task weighting, schedule, and the run folder's records.
    The order of the set-up steps is the order the random number generators are used in (resume relies on it)."""

    def __init__(self, cfg: TrainConfig, log: Callable[[str], None]):
        self.cfg, self.log = cfg, log
        self.rank, self.world, self.device = init_distributed()
        self.is_main = self.rank == 0
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed + self.rank)
        self.run_dir = cfg.run_dir
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            cfg.to_yaml(self.run_dir / "config.yaml")
        self.model_config = build_model_config(cfg)
        self.size = cfg.data.size or tuple(self.model_config.input_size)
        self._build_data()
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank (DDP also broadcasts rank 0's)
        self.model = build_training_model(cfg, self.class_set).to(self.device)
        torch.manual_seed(cfg.seed + self.rank)
        self.net = self.model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self._build_optimisation()
        self.history: list[dict] = []
        self.best = {"score": -1.0, "epoch": -1}
        self.start_epoch = 0
        self.state_path = self.run_dir / STATE_FILE

    def _build_data(self) -> None:
        cfg, t0 = self.cfg, time.time()
        self.train_set, self.val_set = build_train_val(cfg.data, self.size, seed=cfg.seed,
                                                       progress=cfg.progress and self.is_main)
        self.class_set = dataset_class_set(self.train_set) or MTLESD
        if self.is_main:
            self.class_set.save_yaml(self.run_dir / "classes.yaml")
            self.log(f"data: {len(self.train_set)} train / {len(self.val_set)} val frames at "
                     f"{self.size[0]}x{self.size[1]} ({time.time() - t0:.1f} s)")

    def _build_optimisation(self) -> None:
        cfg, world = self.cfg, self.world
        self.shared, self.task = split_parameters(self.model)
        self.params = self.shared + self.task
        opt_cls = torch.optim.AdamW if cfg.optim.name == "adamw" else torch.optim.Adam
        self.optimizer = opt_cls(self.params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        w = cfg.weighting
        self.weighting = build_weighting(w.method, dbmtl_beta=w.dbmtl_beta, stch_mu=w.stch_mu,
                                         stch_warmup_epochs=w.stch_warmup_epochs, task_weights=w.task_weights)
        self.sampler = DistributedSampler(self.train_set, num_replicas=world, rank=self.rank, shuffle=True,
                                          seed=cfg.seed, drop_last=len(self.train_set) >= world * cfg.batch_size)
        self.loader = DataLoader(self.train_set, batch_size=cfg.batch_size, sampler=self.sampler,
                                 num_workers=cfg.workers, collate_fn=collate,
                                 drop_last=len(self.train_set) // world >= cfg.batch_size,
                                 persistent_workers=cfg.workers > 0)
        steps = len(self.loader)
        self.steps_per_epoch = steps if cfg.max_steps_per_epoch <= 0 else min(steps, cfg.max_steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(cfg, self.steps_per_epoch))

    def resume(self) -> None:
        """Continue from the run folder's last weights and trainer state (nothing to do when there are none)."""
        if not self.state_path.is_file():
            return

        self.model.load_state_dict(load_file(str(self.run_dir / "last.safetensors")))
        state = torch.load(self.state_path, map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.weighting.load_state_dict(state["weighting"])
        self.history, self.best = list(state["history"]), dict(state["best"])
        self.start_epoch = int(state["epoch"])
        rng = state["rng"]
        torch.set_rng_state(rng[self.rank] if self.rank < len(rng) else rng[0])
        if self.is_main:
            self.log(f"resumed from {self.run_dir} after epoch {self.start_epoch}")

    def log_start(self) -> None:
        if self.is_main:
            cfg = self.cfg
            n_tr = sum(p.numel() for p in self.params)
            self.log(f"model: {self.model_config.backbone} backbone, {n_tr:,} trainable parameters ({cfg.freeze}); "
                     f"weighting {cfg.weighting.method}; {self.world} process(es) on {self.device}; "
                     f"{self.steps_per_epoch} steps/epoch x {cfg.epochs} epochs")

    def train_epoch(self, epoch: int) -> dict:
        """One pass over the training shard; returns the epoch's record (mean losses, lr, time)."""
        cfg = self.cfg
        self.sampler.set_epoch(epoch)
        self.weighting.start_epoch(epoch)
        self.net.train()
        sums = {"segmentation": 0.0, "activity": 0.0, "objective": 0.0}
        self._t_epoch = t_epoch = time.time()
        it = iter(self.loader)
        bar = None
        if self.is_main and cfg.progress:

            bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", leave=False)
        for _ in range(self.steps_per_epoch):
            l_seg, l_act, objective = self._step(next(it))
            sums["segmentation"] += l_seg
            sums["activity"] += l_act
            sums["objective"] += objective
            if bar is not None:
                bar.set_postfix(seg=f"{l_seg:.3f}", act=f"{l_act:.3f}")
                bar.update()
        if bar is not None:
            bar.close()
        self.weighting.end_epoch(epoch)
        if self.world > 1:  # BN statistics: rank 0's, so every rank holds identical weights and buffers
            for b in self.model.buffers():
                dist.broadcast(b, 0)
        n_steps = max(self.steps_per_epoch, 1)
        return {"epoch": epoch + 1, "lr": self.scheduler.get_last_lr()[0],
                "train_time_s": round(time.time() - t_epoch, 2),
                "train": {k: v / n_steps for k, v in sums.items()}}

    def _step(self, batch: dict) -> tuple[float, float, float]:
        """One optimisation step; returns (segmentation loss, activity loss, weighting objective)."""
        cfg, device = self.cfg, self.device
        images, masks, labels = (batch[k].to(device, non_blocking=True) for k in ("image", "mask", "activity"))
        self.optimizer.zero_grad(set_to_none=True)
        manual = self.world > 1 and self.weighting.manual_sync
        with self.net.no_sync() if manual else contextlib.nullcontext():
            with autocast(device, cfg.amp):
                out = self.net(images)
            l_seg = segmentation_loss(out.segmentation, masks, ignore_index=cfg.ignore_index,
                                      dice_weight=cfg.seg_dice_weight)
            l_act = activity_loss(out.activity, labels)
            info = self.weighting.backward([l_seg, l_act], self.shared, self.task)
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return float(l_seg.detach()), float(l_act.detach()), info.get("objective", 0.0)

    def end_epoch(self, epoch: int, record: dict) -> None:
        """Rank 0 validates, keeps last / best weights and the trainer state, and logs; the others keep step."""
        if not self.is_main:
            gather_rng(self.world)
            self.history.append(record)
            return
        cfg, run_dir = self.cfg, self.run_dir
        val = evaluate(self.model, self.val_set, batch_size=cfg.eval_batch_size, device=self.device, amp=cfg.amp,
                       ignore_index=cfg.ignore_index, workers=cfg.workers)
        score = selection_score(val)
        record["val"] = {**summary(val), "loss": val["loss"], "score": score, "iou": val["segmentation"]["iou"]}
        record["time_s"] = round(time.time() - self._t_epoch, 2)
        self.history.append(record)
        save_model(self.model, run_dir / "last")
        if score > self.best["score"]:
            self.best = {"score": score, "epoch": epoch + 1, **summary(val)}
            save_model(self.model, run_dir / "best")
            _write_json(run_dir / "best_val_metrics.json", val)
        torch.save({"epoch": epoch + 1, "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "weighting": self.weighting.state_dict(),
                    "history": self.history, "best": self.best, "rng": gather_rng(self.world)}, self.state_path)
        _write_metrics(run_dir, cfg, self.history, self.best, self.world)
        v = record["val"]
        self.log(f"epoch {epoch + 1}/{cfg.epochs}: train seg {record['train']['segmentation']:.4f} "
                 f"act {record['train']['activity']:.4f} | val acc {v['activity_accuracy']:.4f} "
                 f"mIoU fg {v['miou_fg']:.4f} all {v['miou_all']:.4f} | {record['time_s']:.0f} s")

    def finish(self) -> dict:
        """After the last epoch: the test split once with the best weights, plots, the final metrics."""
        cfg, run_dir = self.cfg, self.run_dir
        final: dict = {"run_dir": str(run_dir), "best": self.best, "weighting": cfg.weighting.method,
                       "world_size": self.world, "param_hash": parameter_hash(self.model)}
        if self.is_main:
            test_result = self._evaluate_test(final)
            try:

                val_best = json.loads((run_dir / "best_val_metrics.json").read_text())
                write_plots(run_dir, self.history, test_result or val_best,
                            "test" if test_result is not None else "validation")
            except Exception as e:  # plots are a convenience: never fail a finished run on them
                self.log(f"plots skipped: {e}")
            _write_metrics(run_dir, cfg, self.history, self.best, self.world, final.get("test"))
        barrier()
        return final

    def _evaluate_test(self, final: dict) -> dict | None:
        cfg = self.cfg
        if not (cfg.evaluate_test and _has_test(cfg)):
            return None
        test_set = build_split(cfg.data, cfg.data.test_split, self.size, class_set=self.class_set)
        best_model = load_model(self.run_dir / "best.safetensors", device=self.device)
        result = evaluate(best_model, test_set, batch_size=cfg.eval_batch_size, device=self.device, amp=cfg.amp,
                          ignore_index=cfg.ignore_index)
        _write_json(self.run_dir / "test_metrics.json", result)
        final["test"] = summary(result)
        self.log(f"test (best epoch {self.best['epoch']}): acc {final['test']['activity_accuracy']:.4f} "
                 f"mIoU fg {final['test']['miou_fg']:.4f}")
        return result


def _has_test(cfg: TrainConfig) -> bool:
    if cfg.data.layout == "synthetic":
        return cfg.data.synthetic.test > 0
    root = Path(cfg.data.root)
    return (root / cfg.data.test_split).is_dir()


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, allow_nan=True))


def _write_metrics(run_dir: Path, cfg: TrainConfig, history, best, world, test=None) -> None:
    record = {"name": cfg.name, "weighting": cfg.weighting.method, "freeze": cfg.freeze, "world_size": world,
              "selection": "best validation score = (activity accuracy + foreground mIoU) / 2",
              "best": best, "epochs": history}
    if test is not None:
        record["test_best"] = test
    _write_json(run_dir / "metrics.json", record)
