"""The node's memory: giving a released model's CPU and GPU memory back, and the process's resident size."""
from __future__ import annotations

import ctypes
import gc
import sys


def rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def return_freed_heap_to_os() -> None:
    """glibc keeps freed heap pages mapped; trimming gives the model's CPU memory back to the system."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def close_engine(engine, log) -> None:
    """Close ``engine`` (may be None); the caller then drops its reference and calls ``return_memory``."""
    if engine is not None:
        try:
            engine.close()
        except Exception as e:  # noqa: BLE001
            log.warning(f"closing the inference engine: {e}")


def return_memory() -> None:
    """Give released memory back: Python heap, CUDA cache, glibc arenas."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
    return_freed_heap_to_os()


def cuda_memory_info() -> dict[str, str]:
    """CUDA memory figures for /diagnostics (empty without CUDA; torch is not imported for them)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return {}
    return {"cuda_memory_allocated_mb": f"{torch.cuda.memory_allocated() / 2**20:.1f}",
            "cuda_memory_reserved_mb": f"{torch.cuda.memory_reserved() / 2**20:.1f}"}


def empty_cuda_cache_after_oom(error: BaseException) -> None:
    torch = sys.modules.get("torch")
    if torch is not None and "out of memory" in str(error).lower() and torch.cuda.is_available():
        torch.cuda.empty_cache()
