"""Ray for `endoarss replay-many`: the embedded cluster or an existing one, and the replayer actors.

The only modules that import ``ray`` are this one and ``replay_many`` (both lazily, inside functions), so the
node and ``endoarss replay`` never load it. The embedded cluster: ``address="local"`` (never an accidental
attach to ``RAY_ADDRESS`` or the machine's last cluster), loopback, no dashboard, a capped object store, its
session files (logs, sockets) in a temp dir, token auth on with a per-run token in the environment (without
one Ray 2.60 writes ``~/.ray/auth_token``), no usage reporting.
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
from pathlib import Path

OBJECT_STORE_BYTES = 128 * 2**20  # only paths and small dicts travel through it
LOCAL_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",  # no reports to anyscale.com
    "RAY_AUTH_MODE": "token",  # explicit, so Ray neither warns nor looks for a token in $HOME
    "RAY_enable_worker_prestart": "0",  # no idle workers beside the replayers
    "RAY_enable_metrics_collection": "0",
}


class StartError(RuntimeError):
    """Ray or the replayers could not start (no recording was at fault)."""


class Cluster:
    """A connection to Ray: an embedded cluster started here (``address`` None) or an existing one."""

    def __init__(self, address: str | None, *, num_cpus: int | None, num_gpus: float | None):
        self.address, self.num_cpus, self.num_gpus = address, num_cpus, num_gpus
        self.temp_dir: Path | None = None
        self.ray = None

    def _check_reachable(self) -> None:
        """Fail fast when nothing listens at HOST:PORT (Ray itself keeps retrying for minutes)."""
        host, _, port = (self.address or "").rpartition(":")
        if not host or not port.isdigit() or "://" in self.address:
            return
        try:
            socket.create_connection((host, int(port)), timeout=10).close()
        except OSError as e:
            raise StartError(f"cannot join the Ray cluster at {self.address}: nothing answers there "
                             f"({e.strerror or e}); start it with `ray start --head --port={port}`") from e

    def __enter__(self) -> Cluster:
        self._check_reachable()
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if self.address is None:
            for key, value in LOCAL_ENV.items():
                os.environ.setdefault(key, value)
            if not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
                os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)  # this run's only; never written to disk
            # A short path: Ray's Unix sockets live under it (107-byte limit), so not under a deep OUT_ROOT.
            self.temp_dir = Path(tempfile.mkdtemp(prefix="endoarss-ray-"))
        import ray

        self.ray = ray
        try:
            if self.address is None:
                ray.init(address="local", num_cpus=self.num_cpus, num_gpus=self.num_gpus, include_dashboard=False,
                         object_store_memory=OBJECT_STORE_BYTES, _temp_dir=str(self.temp_dir),
                         _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False)
            else:
                ray.init(address=self.address, log_to_driver=False, configure_logging=False)
        except Exception as e:  # noqa: BLE001 - Ray raises many kinds (ConnectionError, RuntimeError, ...)
            self.close(keep_logs=True)
            where = f"join the Ray cluster at {self.address}" if self.address else "start an embedded Ray cluster"
            logs = f" (Ray's logs: {self.temp_dir})" if self.temp_dir else ""
            raise StartError(f"cannot {where}: {type(e).__name__}: {e}{logs}") from e
        except BaseException:
            self.close()
            raise
        return self

    def resources(self) -> tuple[float, float]:
        """(CPUs, GPUs) the cluster has in all."""
        res = self.ray.cluster_resources()
        return float(res.get("CPU", 0)), float(res.get("GPU", 0))

    def close(self, *, keep_logs: bool = False) -> None:
        """Embedded: stop every Ray process and wait for them (``keep_logs``: leave the session folder for
        inspection). Existing cluster: disconnect only (our actors end with this driver)."""
        if self.ray is not None and self.ray.is_initialized():
            self.ray.shutdown(wait_for_processes=self.address is None)
        if self.temp_dir is not None and not keep_logs:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __exit__(self, exc_type, exc, tb) -> None:
        # Ray's logs are kept for a failure to start or run, not after Ctrl-C or a normal end.
        self.close(keep_logs=exc_type is not None and not issubclass(exc_type, KeyboardInterrupt))


class Replayer:
    """One replayer (a Ray actor): the model loaded once here, then one recording per ``replay`` call through
    the same code as ``endoarss replay``. A recording that fails for a reason of its own comes back as
    ``{"status": "failed"}`` (not retried); running out of memory as ``{"status": "retry"}``."""

    def __init__(self, options: dict):
        import ray

        from endoarss_ros.bag.replay import ReplayOptions, make_engine

        self.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        self.node_id = ray.get_runtime_context().get_node_id()
        options = dict(options)
        if options.get("device") == "auto" and not self.gpu_ids:
            options["device"] = "cpu"  # a replayer without a GPU share must not take one unaccounted
        self.options = options
        self.engine = make_engine(ReplayOptions(input=Path(), output=Path(), **options))

    def ready(self) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname(), "node_id": self.node_id, "gpu_ids": self.gpu_ids,
                "device": str(getattr(self.engine, "device", ""))}

    def replay(self, job: dict) -> dict:
        from endoarss_ros.bag.archive import clear_folder
        from endoarss_ros.bag.replay import ReplayOptions, replay

        folder, output = Path(job["folder"]), Path(job["output"])
        clear_folder(folder)  # a killed attempt's partials and any older outputs
        try:
            folder.mkdir(parents=True, exist_ok=True)
            summary = replay(ReplayOptions(input=Path(job["input"]), output=output, **self.options,
                                           engine=self.engine, overwrite=True, progress=False,
                                           video=folder / f"{output.name}.mp4" if job["video"] else None,
                                           made_from=job["made_from"]))
        except MemoryError as e:
            return {"status": "retry", "error": f"out of memory: {e}", "pid": os.getpid()}
        except Exception as e:  # noqa: BLE001 - any other failure is this recording's own, reported as such
            if type(e).__name__ == "OutOfMemoryError":  # torch's CUDA OOM: another attempt may fit
                return {"status": "retry", "error": f"out of memory: {e}", "pid": os.getpid()}
            return {"status": "failed", "error": " ".join(f"{type(e).__name__}: {e}".split()), "pid": os.getpid()}
        return {"status": "ok", "pid": os.getpid(), "frames_in": summary["frames_in"],
                "frames_out": summary["frames_out"], "frames_failed": summary["frames_failed"],
                "wall_s": summary["throughput"]["wall_s"]}


def start_replayers(cluster: Cluster, count: int, *, cpus: float, gpus: float, memory: int | None,
                    options: dict, restarts: int) -> list:
    """``count`` replayer actors with the given share each, restarted after a crash (their calls are not
    retried by Ray: the driver counts the attempts)."""
    actor = cluster.ray.remote(Replayer).options(num_cpus=cpus, num_gpus=gpus, memory=memory,
                                                 max_restarts=restarts, max_task_retries=0)
    return [actor.remote(options) for _ in range(count)]
