"""Logits -> class masks at the frame's resolution, and the overlay; CPU (numpy / cv2) and device (torch).

The exact mask is the argmax over classes of the bilinearly upsampled logits. ``reference_logits_argmax``
defines it on the CPU: float32, PyTorch's source-coordinate convention (``align_corners`` False or True), the
horizontal pass first (``R = L[:, :, x0] * wx0 + L[:, :, x1] * wx1``), then the vertical one
(``V = R[:, y0] * wy0 + R[:, y1] * wy1``), first index on ties. It agrees with ``F.interpolate`` + ``argmax``
except where two classes tie to float rounding.

``logits_argmax`` returns exactly the same mask without upsampling every class at every pixel. Each output
pixel reads the 2x2 source cell ``(i0, i1) x (j0, j1)``; its upsampled logit vector is a convex combination of
the cell's four corner vectors. Per cell, with an anchor class ``a`` (best corner sum), a class ``k`` whose
corner differences ``L[k] - L[a]`` are all below ``-eps`` loses to ``a`` at every pixel of the cell by more than
``eps``; ``eps = 1e-5 * max|L|`` is ~40x the float32 rounding of the interpolation, so it loses in float32 too.
In the cells still ambiguous, a class that any other class beats by more than ``eps`` at all four corners is
dropped as well. Cells left with one candidate take it for all their pixels; the others are evaluated with the
reference's own float32 operations, in the same order, over their candidates only, so every pixel matches bit
for bit: cell by cell (vectorised over all cells with the same number of candidates) when few pixels are
ambiguous, and band of output rows by band (each band's ambiguous columns) when many are (e.g. logits of noise),
so that the worst case stays within a small factor of the dense method (measured in BENCHMARKS.md).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

_EPS_REL = 1e-5
_BAND_FRACTION = 0.25  # above this share of ambiguous pixels, evaluate whole row bands (noise-like logits)
_CHUNK_VALUES = 1 << 18  # float32 values per evaluated chunk of cells (~1 MiB: stays in the cache)


class AxisMap(NamedTuple):
    """Bilinear sampling along one axis: per output index, source indices ``i0 <= i1`` and float32 weights;
    per source index, where its output run starts and how long it is (``i0`` is non-decreasing)."""

    i0: np.ndarray
    i1: np.ndarray
    w0: np.ndarray
    w1: np.ndarray
    start: np.ndarray
    count: np.ndarray


@functools.lru_cache(maxsize=32)
def axis_map(n_in: int, n_out: int, align_corners: bool) -> AxisMap:
    """PyTorch's ``upsample_bilinear2d`` source coordinates for one axis (cached per shape: read-only arrays)."""
    d = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = d * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
    else:
        src = np.maximum((d + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.intp), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = np.clip(src - i0, 0.0, 1.0).astype(np.float32)
    w0 = np.float32(1.0) - w1
    count = np.bincount(i0, minlength=n_in)
    start = np.concatenate(([0], np.cumsum(count)[:-1]))
    amap = AxisMap(i0, i1, w0, w1, start, count)
    for a in amap:
        a.flags.writeable = False
    return amap


def reference_logits_argmax(logits: np.ndarray, H: int, W: int, *, align_corners: bool = False) -> np.ndarray:
    """The exact mask (see the module docstring), every class at every pixel: ``(C, h, w)`` -> uint8 (H, W)."""
    L = np.ascontiguousarray(logits, np.float32)
    ym, xm = axis_map(L.shape[1], H, align_corners), axis_map(L.shape[2], W, align_corners)
    R = L[:, :, xm.i0] * xm.w0 + L[:, :, xm.i1] * xm.w1
    V = R[:, ym.i0, :] * ym.w0[:, None] + R[:, ym.i1, :] * ym.w1[:, None]
    return V.argmax(0).astype(np.uint8)


def logits_argmax(logits: np.ndarray, H: int, W: int, *, align_corners: bool = False,
                  stats: dict | None = None) -> np.ndarray:
    """``reference_logits_argmax``'s mask, computed only where more than one class can win.

    ``stats`` (optional) receives ``exact_pixels`` (how many output pixels were evaluated class by class),
    ``exact_method`` ('cells': each ambiguous cell over its own candidates; 'bands': whole row bands, when more
    than ``_BAND_FRACTION`` of the pixels are ambiguous) and ``evaluated_values`` (upsampled logits computed;
    the dense method computes ``C * H * W``)."""
    L = np.ascontiguousarray(logits, np.float32)
    C, h, w = L.shape
    scale = float(np.abs(L).max()) if L.size else 0.0
    if not np.isfinite(scale) or C > 255:  # the bound needs finite logits; ids must fit uint8
        return reference_logits_argmax(L, H, W, align_corners=align_corners)
    ym, xm = axis_map(h, H, align_corners), axis_map(w, W, align_corners)
    r1, c1 = np.minimum(np.arange(h) + 1, h - 1), np.minimum(np.arange(w) + 1, w - 1)
    corners = np.stack([L, L[:, :, c1], L[:, r1], L[:, r1][:, :, c1]])  # (4, C, h, w): (i0,j0) (i0,j1) (i1,j0) (i1,j1)
    anchor = corners.sum(0).argmax(0)
    lead = np.take_along_axis(corners, anchor[None, None], 1)
    eps = np.float32(_EPS_REL * scale)
    cand = (corners - lead).max(0) >= -eps  # (C, h, w): not below the anchor at every corner
    ncand = cand.sum(0) * ((ym.count > 0)[:, None] & (xm.count > 0)[None, :])  # 0: cell has no output pixel
    _drop_dominated(corners, cand, ncand, eps)
    mask = np.repeat(anchor.astype(np.uint8)[:, xm.i0], ym.count, axis=0)
    exact = ncand > 1
    exact_pixels = int((ym.count[:, None] * xm.count[None, :])[exact].sum())
    bands = exact_pixels > _BAND_FRACTION * H * W  # e.g. noise: nearly every cell ambiguous
    if bands:
        values = _exact_bands(L, cand, exact, ym, xm, mask)
    else:
        values = sum(_exact_cells(corners, cand, np.nonzero(ncand == k), int(k), ym, xm, mask)
                     for k in np.unique(ncand[exact]))
    if stats is not None:
        stats.update(exact_pixels=exact_pixels, exact_method="bands" if bands else "cells", evaluated_values=values)
    return mask


def _drop_dominated(corners, cand, ncand, eps) -> None:
    """In the cells still ambiguous, also drop each class that some other class (not only the anchor) beats by
    more than ``eps`` at all four corners: it loses to that class at every pixel of the cell."""
    ci, cj = np.nonzero(ncand > 1)
    g = corners[:, :, ci, cj]  # (4, C, n)
    dominated = ((g[:, :, None] - g[:, None, :]).min(0) > eps).any(0)  # (C, n): L[m] - L[k] > eps everywhere
    cand[:, ci, cj] &= ~dominated
    ncand[ci, cj] = cand[:, ci, cj].sum(0)


def _exact_cells(corners, cand, cells, k: int, ym: AxisMap, xm: AxisMap, mask: np.ndarray) -> int:
    """Write the reference's answer into ``mask`` for the given cells, each with exactly ``k`` candidates
    (few cells: only their pixels and candidates are evaluated, in chunks that stay in the CPU's cache; cells of
    one size together, as a chunk is padded to its largest cell, and the border cells are larger)."""
    order = np.lexsort((xm.count[cells[1]], ym.count[cells[0]]))
    ci, cj = cells[0][order], cells[1][order]
    step = max(1, _CHUNK_VALUES // (k * int(ym.count[ci].max()) * int(xm.count[cj].max())))
    return sum(_exact_cell_chunk(corners, cand, ci[s:s + step], cj[s:s + step], k, ym, xm, mask)
               for s in range(0, ci.size, step))


def _exact_cell_chunk(corners, cand, ci, cj, k: int, ym: AxisMap, xm: AxisMap, mask: np.ndarray) -> int:
    n = ci.size
    ks = np.nonzero(cand[:, ci, cj].T)[1].reshape(n, k).T  # (k, n) candidate class ids, ascending
    g = corners[:, ks, ci, cj][:, :, :, None, None]  # (4, k, n, 1, 1)
    # output rows / columns of each cell, padded to the longest run by repeating its last one (the padding
    # evaluates that row / column again: the same value, written twice)
    Y = ym.start[ci, None] + np.minimum(np.arange(ym.count[ci].max()), ym.count[ci, None] - 1)  # (n, mh)
    X = xm.start[cj, None] + np.minimum(np.arange(xm.count[cj].max()), xm.count[cj, None] - 1)  # (n, mw)
    wx0, wx1 = xm.w0[X][:, None, :], xm.w1[X][:, None, :]  # (n, 1, mw)
    R0 = g[0] * wx0 + g[1] * wx1  # (k, n, 1, mw): the reference's R at row i0
    R1 = g[2] * wx0 + g[3] * wx1  # ... at row i1
    V = R0 * ym.w0[Y][:, :, None] + R1 * ym.w1[Y][:, :, None]  # (k, n, mh, mw)
    flat = (Y * mask.shape[1])[:, :, None] + X[:, None, :]  # (n, mh, mw) positions in the mask
    mask.reshape(-1)[flat.ravel()] = _first_argmax(V, ks.astype(np.uint8)[:, :, None, None]).ravel()
    return V.size


def _first_argmax(V: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Per position, the id (``ids[c]``, broadcast against ``V[c]``) of the largest ``V[c]``, the first one on
    ties (a running max in ascending class order, as ``argmax`` takes the first maximum)."""
    best = V[0].copy()
    won = np.broadcast_to(ids[0], best.shape).copy()
    for c in range(1, V.shape[0]):
        better = V[c] > best
        np.maximum(best, V[c], out=best)
        np.copyto(won, ids[c], where=better)
    return won


def _exact_bands(L, cand, exact, ym: AxisMap, xm: AxisMap, mask: np.ndarray) -> int:
    """The reference itself, one band of output rows (those reading source rows ``i``, ``i + 1``) at a time so
    that it stays in the CPU's cache, over the band's ambiguous columns and the union of their candidates."""
    R = L[:, :, xm.i0] * xm.w0 + L[:, :, xm.i1] * xm.w1  # (C, h, W): the reference's horizontal pass
    values = 0
    for i in np.nonzero(exact.any(1))[0]:
        rows = slice(ym.start[i], ym.start[i] + ym.count[i])
        i1 = min(i + 1, L.shape[1] - 1)
        classes = np.nonzero(cand[:, i, exact[i]].any(1))[0]
        cols = slice(None) if exact[i].all() else np.nonzero(np.repeat(exact[i], xm.count))[0]
        wy0, wy1 = ym.w0[rows, None], ym.w1[rows, None]
        V = R[classes, i][:, None, cols] * wy0 + R[classes, i1][:, None, cols] * wy1  # (k, rows, cols)
        mask[rows, cols] = _first_argmax(V, classes.astype(np.uint8)[:, None, None])
        values += V.size
    return values


def dense_logits_argmax(logits: np.ndarray, H: int, W: int, *, align_corners: bool = False) -> np.ndarray:
    """The previous CPU method: every class upsampled to (H, W) with cv2 and a running max (align_corners:
    torch). Same answer as ``reference_logits_argmax`` up to float-rounding ties; kept for comparison."""

    if align_corners:  # cv2 has no align_corners
        t = torch.from_numpy(np.ascontiguousarray(logits))[None]
        up = F.interpolate(t, size=(H, W), mode="bilinear", align_corners=True)
        return up.argmax(dim=1)[0].to(torch.uint8).numpy()
    best = cv2.resize(np.ascontiguousarray(logits[0]), (W, H), interpolation=cv2.INTER_LINEAR)
    idx = np.zeros((H, W), np.uint8)
    for c in range(1, logits.shape[0]):
        u = cv2.resize(np.ascontiguousarray(logits[c]), (W, H), interpolation=cv2.INTER_LINEAR)
        better = u > best
        np.maximum(best, u, out=best)
        idx[better] = c
    return idx


def nearest_mask(small: np.ndarray, H: int, W: int) -> np.ndarray:
    """uint8 (h, w) class ids -> (H, W), nearest-exact (the same function as torch's ``nearest-exact``)."""

    return cv2.resize(small, (W, H), interpolation=cv2.INTER_NEAREST_EXACT)


def device_mask(logits: torch.Tensor, H: int, W: int, upsample: str, align_corners: bool) -> torch.Tensor:
    """``(B, C, h, w)`` logits -> ``(B, H, W)`` uint8 on their device. 'logits' / 'logits-dense': dense bilinear
    then argmax (cheap on a GPU); 'mask': argmax at ``(h, w)`` then nearest-exact."""
    if upsample == "mask":
        small = logits.argmax(dim=1, keepdim=True).to(torch.uint8)
        return F.interpolate(small, size=(H, W), mode="nearest-exact")[:, 0]
    up = F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=align_corners)
    return up.argmax(dim=1).to(torch.uint8)


def cpu_overlay(rgb: np.ndarray, mask: np.ndarray, colors: np.ndarray, alpha: float) -> np.ndarray:
    """Blend class colours over ``rgb`` where ``mask > 0`` (background pixels keep the image)."""

    col = colors[mask]
    blended = cv2.addWeighted(rgb, 1.0 - alpha, col, alpha, 0.0)
    fg = mask > 0
    out = rgb.copy()
    out[fg] = blended[fg]
    return out


def device_overlay(rgb: torch.Tensor, mask: torch.Tensor, colors: torch.Tensor, alpha: float) -> torch.Tensor:
    """``rgb`` (B, 3, H, W) float [0, 255], ``mask`` (B, H, W) uint8 -> (B, H, W, 3) uint8, on the device."""
    col = colors[mask.long()].permute(0, 3, 1, 2).float()
    blended = rgb * (1.0 - alpha) + col * alpha
    out = torch.where((mask > 0).unsqueeze(1), blended, rgb)
    return out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def top_class_probability(logits: torch.Tensor) -> torch.Tensor:
    """``(B, C, h, w)`` segmentation logits -> ``(B, h, w)`` float32 softmax maximum, each pixel's confidence, on
    the host: computed where the logits are and, from a device, copied without waiting (read it after the
    device's next synchronisation)."""
    top = torch.softmax(logits.float(), dim=1).amax(dim=1)
    if top.device.type == "cpu":
        return top
    host = torch.empty(top.shape, dtype=torch.float32, pin_memory=True)
    return host.copy_(top, non_blocking=True)
