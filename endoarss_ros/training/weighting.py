"""Multi-task loss weighting: equal, DB-MTL (MTLESD recipe) and STCH (MTLEndovis recipe).

A weighting turns the per-task losses ``L = (L_seg, L_act)`` of one batch into parameter gradients
(``.grad``), ready for ``optimizer.step()``. ``shared`` parameters are the trainable ones both tasks
reach (backbone with its adapters, SMA); ``task`` parameters are the rest (necks and heads).

* ``EqualWeighting``:   minimise Σ_t w_t L_t (static weights, default all 1 = the released loss).
* ``DBMTL`` (dual-balancing, beta = 0.9):
      per task, g_t = ∇_shared log(L_t + 1e-8)                       (one backward pass per task)
      ĝ_t ← β ĝ_t + (1 - β) g_t                                      (EMA, ĝ_t starts at 0)
      α_t = max_k ‖ĝ_k‖ / (‖ĝ_t‖ + 1e-8)
      shared grad = Σ_t α_t ĝ_t       -- every task's shared gradient rescaled to the largest norm
      task grad   = Σ_t ∇_task log(L_t + 1e-8)                     (heads: plain log-loss gradients)
  Only the *trainable shared* parameters enter the gradient vectors (the released code flattens the
  whole encoder, frozen weights included).
* ``STCH`` (smooth Tchebycheff, mu = 1, warm-up W = 4 epochs):
      epochs 0 .. W-1:  minimise Σ_t log(L_t + 1e-8); during epoch W-1 the losses are averaged into the
                        nadir vector z (z_t = mean of L_t over that epoch's batches, averaged over ranks)
      epochs >= W:      u_t = log(L_t / z_t),  m = max_t u_t (constant),
                        minimise T · mu · log Σ_t exp((u_t - m) / mu)
  The constant m only stabilises the exponentials (it does not change the gradient).

Under ``torchrun`` DB-MTL computes its gradients itself, so the loop runs it without DDP's automatic
all-reduce (``manual_sync``) and the per-task gradients are averaged over ranks here, before the EMA:
every rank then holds the same buffers and takes the same step.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn

EPS = 1e-8
SHARED_PREFIXES = ("backbone.", "pixel_sma.", "feature_sma.")


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(shared, task-specific) trainable parameters of an EndoARSS model (or of a DDP wrapper)."""
    model = getattr(model, "module", model)
    shared, task = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (shared if name.startswith(SHARED_PREFIXES) else task).append(p)
    return shared, task


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class Weighting:
    """Base class: ``backward(losses, shared, task)`` fills ``.grad``; returns scalars to log."""

    name = "base"
    manual_sync = False  # True: computes gradients itself (the loop disables DDP's all-reduce)

    def __init__(self) -> None:
        self.epoch = 0

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def end_epoch(self, epoch: int) -> None:
        pass

    def backward(self, losses: Sequence[torch.Tensor], shared: Sequence[nn.Parameter],
                 task: Sequence[nn.Parameter]) -> dict[str, float]:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state.get("epoch", 0))


class EqualWeighting(Weighting):
    """Σ_t w_t L_t with static weights (all 1 by default: the released loss)."""

    name = "equal"

    def __init__(self, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.weights = None if weights is None else [float(w) for w in weights]

    def backward(self, losses, shared, task):
        w = self.weights or [1.0] * len(losses)
        total = torch.stack([wt * l.float() for wt, l in zip(w, losses)]).sum()
        total.backward()
        return {"objective": float(total.detach())}


class DBMTL(Weighting):
    """Dual-balancing MTL: log-losses, EMA of per-task shared gradients rescaled to the largest norm."""

    name = "dbmtl"
    manual_sync = True

    def __init__(self, beta: float = 0.9) -> None:
        super().__init__()
        self.beta = float(beta)
        self.buffer: torch.Tensor | None = None  # (T, n_shared) EMA of the shared gradients
        self.last_alpha: list[float] = []
        self.last_norms: list[float] = []  # ‖α_t ĝ_t‖ after rescaling (all equal)

    def backward(self, losses, shared, task):
        shared, task = list(shared), list(task)
        params = shared + task
        T = len(losses)
        n_shared = sum(p.numel() for p in shared)
        rows = []
        for t, loss in enumerate(losses):
            log_loss = torch.log(loss.float() + EPS)
            grads = torch.autograd.grad(log_loss, params, retain_graph=t < T - 1, allow_unused=True)
            rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                   for g, p in zip(grads, params)]))
        g = torch.stack(rows)  # (T, n_shared + n_task)
        if _world() > 1:
            dist.all_reduce(g)
            g /= _world()
        g_shared, g_task = g[:, :n_shared], g[:, n_shared:]
        if self.buffer is None or self.buffer.shape != g_shared.shape:
            self.buffer = torch.zeros_like(g_shared)
        self.buffer = self.beta * self.buffer + (1 - self.beta) * g_shared
        norms = self.buffer.norm(dim=1)
        alpha = norms.max() / (norms + EPS)
        shared_grad = (alpha.unsqueeze(1) * self.buffer).sum(0)
        task_grad = g_task.sum(0)
        self._assign(shared, shared_grad)
        self._assign(task, task_grad)
        self.last_alpha = alpha.tolist()
        self.last_norms = (alpha * norms).tolist()
        return {"objective": float(sum(torch.log(l.detach().float() + EPS) for l in losses)),
                **{f"alpha_{t}": a for t, a in enumerate(self.last_alpha)}}

    @staticmethod
    def _assign(params: Sequence[nn.Parameter], flat: torch.Tensor) -> None:
        i = 0
        for p in params:
            n = p.numel()
            grad = flat[i:i + n].view_as(p).to(p.dtype)
            p.grad = grad.clone() if p.grad is None else p.grad.add_(grad)
            i += n

    def state_dict(self):
        return {**super().state_dict(), "beta": self.beta, "buffer": self.buffer}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.buffer = state.get("buffer")


class STCH(Weighting):
    """Smooth Tchebycheff scalarisation after a log-loss warm-up that sets the nadir point."""

    name = "stch"

    def __init__(self, mu: float = 1.0, warmup_epochs: int = 4) -> None:
        super().__init__()
        self.mu = float(mu)
        self.warmup_epochs = int(warmup_epochs)
        self.nadir: torch.Tensor | None = None
        self._sum: torch.Tensor | None = None
        self._count = 0

    @property
    def phase(self) -> str:
        return "warmup" if self.nadir is None else "tchebycheff"

    def backward(self, losses, shared, task):
        L = torch.stack([l.float() for l in losses])
        if self.nadir is None and self.warmup_epochs <= 0:
            self.nadir = L.detach().clone()  # no warm-up: the first batch is the nadir
        if self.nadir is None:
            obj = torch.log(L + EPS).sum()
            if self.epoch >= self.warmup_epochs - 1:
                d = L.detach()
                self._sum = d.clone() if self._sum is None else self._sum + d
                self._count += 1
        else:
            u = torch.log(L + EPS) - torch.log(self.nadir.to(L) + EPS)
            m = u.max().detach()
            obj = len(losses) * self.mu * torch.logsumexp((u - m) / self.mu, dim=0)
        obj.backward()
        return {"objective": float(obj.detach()), "stch_phase": 0.0 if self.nadir is None else 1.0}

    def end_epoch(self, epoch: int) -> None:
        if self.nadir is None and epoch >= self.warmup_epochs - 1 and self._count:
            stats = torch.cat([self._sum, torch.tensor([float(self._count)])])
            if _world() > 1:
                dist.all_reduce(stats)
            self.nadir = stats[:-1] / stats[-1]
            self._sum, self._count = None, 0

    def state_dict(self):
        return {**super().state_dict(), "mu": self.mu, "warmup_epochs": self.warmup_epochs,
                "nadir": self.nadir, "sum": self._sum, "count": self._count}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.nadir = state.get("nadir")
        self._sum = state.get("sum")
        self._count = int(state.get("count", 0))


def build_weighting(method: str, *, dbmtl_beta: float = 0.9, stch_mu: float = 1.0,
                    stch_warmup_epochs: int = 4, task_weights: Sequence[float] | None = None) -> Weighting:
    """``task_weights`` (segmentation, activity) apply to ``equal`` only."""
    if method == "equal":
        return EqualWeighting(task_weights)
    if method == "dbmtl":
        return DBMTL(beta=dbmtl_beta)
    if method == "stch":
        return STCH(mu=stch_mu, warmup_epochs=stch_warmup_epochs)
    raise ValueError(f"unknown weighting {method!r}")
