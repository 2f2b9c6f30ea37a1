"""`endoarss replay-many INPUT... -o OUT_ROOT`: `endoarss replay` over an archive of recordings on Ray.

Each recording's outputs are those of ``endoarss replay -o OUT_ROOT/<name>/<name>`` (``bag/archive.py``), made by
the same code in a long-lived replayer actor that holds the model (``replay_many_cluster``). The driver hands
out one recording per replayer at a time, the largest first; retries a recording whose replayer died, up to
``--max-attempts``; records a recording that fails for a reason of its own without retrying it; skips what a
previous run finished from the same input, weights, options and package version; and rebuilds
``OUT_ROOT/aggregate.json`` / ``.csv`` / ``.png`` and ``report.html`` from every summary on disk
(``bag/archive_report.py``).
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from endoarss_ros import __version__
from endoarss_ros.bag.archive import (
    clear_folder,
    file_identity,
    find_recordings,
    is_finished,
    recording_stat,
)
from endoarss_ros.bag.archive_report import FIGURES, write_aggregate
from endoarss_ros.bag.reader import BagError
from endoarss_ros.inference.weights_path import resolve_model_path
from endoarss_ros.tools.replay import add_recording_arguments, recording_options
from endoarss_ros.tools.replay_many.replay_many_cluster import Cluster, StartError, start_replayers
from endoarss_ros.tools.replay_many.replay_many_dispatch import Dispatcher, short_error

PROG = "endoarss replay-many"
START_TIMEOUT_S = 600  # replayers that cannot be placed (resources the cluster lacks) would wait forever


def add_arguments(parser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="a recording (rosbag2 folder), a folder searched for them, or a .txt/.list file "
                             "naming them one a line")
    parser.add_argument("-o", "--output", dest="out_root", type=Path, required=True, metavar="OUT_ROOT",
                        help="writes OUT_ROOT/<name>/ per recording (what `endoarss replay` writes), "
                             "aggregate.json/.csv/.png, report.html and progress.jsonl")
    add_recording_arguments(parser)
    parser.add_argument("--video", action="store_true", help="also render OUT_ROOT/<name>/<name>.mp4")
    parser.add_argument("--force", action="store_true", help="redo recordings a previous run finished")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    ray = parser.add_argument_group("Ray")
    ray.add_argument("--address", metavar="HOST:PORT|auto",
                     help="join this Ray cluster (inputs and outputs on a file system all its nodes share); "
                          "default: an embedded cluster on this machine, stopped at the end")
    ray.add_argument("--replayers", type=int, help="replayer actors (default: as many as the resources allow)")
    ray.add_argument("--cpus-per-replayer", type=float,
                     help="CPUs per replayer (default 1; with GPUs, the node's CPUs per GPU up to 4)")
    ray.add_argument("--gpus-per-replayer", type=float,
                     help="GPU share per replayer, fractions allowed (default 1 if the cluster has GPUs, else 0)")
    ray.add_argument("--memory-per-replayer", metavar="SIZE", type=_bytes,
                     help="memory Ray reserves per replayer, e.g. 8G (default: none reserved)")
    ray.add_argument("--max-attempts", type=int, default=3,
                     help="attempts per recording when its replayer dies (killed, out of memory); default 3")
    ray.add_argument("--num-cpus", type=int, help="CPUs of the embedded cluster (default: this machine's)")
    ray.add_argument("--num-gpus", type=float, help="GPUs of the embedded cluster (default: what Ray detects)")


def _bytes(text: str) -> int:
    """A size such as 8G, 512M, 1.5GiB or a number of bytes."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = units.get(t[-1:], 1)
    try:
        return int(float(t[:-1] if t[-1:] in units else t) * unit)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 8G, 512M)") from None


class _Progress:
    """progress.jsonl (one JSON event a line, appended) and the progress bar; only the driver writes them."""

    def __init__(self, out_root: Path, total: int, bar: bool):
        self.file = open(out_root / "progress.jsonl", "a")  # noqa: SIM115 - closed in close()
        self.done = self.failed = self.frames = 0
        self.t0 = self.t_replay = time.monotonic()
        self.bar = None
        if bar and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="recordings", unit="rec", dynamic_ncols=True)

    def event(self, event: str, **fields) -> None:
        self.file.write(json.dumps({"t": round(time.time(), 3), "event": event, **fields}) + "\n")
        self.file.flush()

    def say(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(f"{PROG}: {text}", file=sys.stderr)
        else:
            print(f"{PROG}: {text}", file=sys.stderr)

    def replaying(self) -> None:
        """The replayers are ready: rates and the ETA count from here (not from the cluster's start)."""
        self.t_replay = time.monotonic()
        if self.bar is not None:
            self.bar.reset()

    def finished(self, ok: bool, frames: int = 0) -> None:
        self.done += ok
        self.failed += not ok
        self.frames += frames
        if self.bar is not None:
            fps = self.frames / max(time.monotonic() - self.t_replay, 1e-9)
            self.bar.set_postfix(done=self.done, failed=self.failed, fps=f"{fps:.1f}")
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.file.close()


def _sizing(args, cpus: float, gpus: float, todo: int) -> tuple[int, float, float]:
    """(replayers, CPUs each, GPUs each) from the options, else from the cluster's resources."""
    gpus_per = args.gpus_per_replayer if args.gpus_per_replayer is not None else (1.0 if gpus >= 1 else 0.0)
    if args.cpus_per_replayer is not None:
        cpus_per = args.cpus_per_replayer
    else:
        cpus_per = float(max(1, min(4, int(cpus // max(1, gpus // gpus_per))))) if gpus_per > 0 else 1.0
    fit = min(int(gpus // gpus_per) if gpus_per > 0 else todo, int(cpus // cpus_per) if cpus_per > 0 else todo)
    replayers = args.replayers or max(1, min(fit, todo))
    return replayers, cpus_per, gpus_per


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def _prepare(args):
    """(recordings, made_from without the input) or an error message."""
    try:
        recordings = find_recordings(args.inputs)
    except (BagError, OSError) as e:
        return None, str(e)
    if not recordings:
        return None, f"no recordings (rosbag2 folders) found in {', '.join(args.inputs)}"
    model = resolve_model_path(args.model).absolute()
    if not model.is_file():
        return None, f"model {model}: no such file (give --model PATH to a .safetensors file)"
    options = dict(recording_options(args), model=str(model))
    made_from = {"package_version": __version__, "weights": file_identity(model), "options": options,
                 "video": args.video}
    if args.temporal_model:
        temporal = Path(args.temporal_model).absolute()
        if not temporal.is_file():
            return None, f"temporal model {temporal}: no such file"
        options["temporal_model"] = str(temporal)
        made_from["temporal_weights"] = file_identity(temporal)
    return recordings, made_from


def run(args) -> int:
    recordings, made_from = _prepare(args)
    if recordings is None:
        print(f"{PROG}: error: {made_from}", file=sys.stderr)
        return 2
    out_root = Path(args.out_root).absolute()  # the replayers may run in another folder (or on another node)
    out_root.mkdir(parents=True, exist_ok=True)
    todo = [r for r in recordings
            if args.force or not is_finished(r, out_root, dict(made_from, input=recording_stat(r.path)))]
    progress = _Progress(out_root, len(todo), args.progress and sys.stderr.isatty())
    progress.event("run", recordings=len(recordings), todo=len(todo), skipped=len(recordings) - len(todo),
                   address=args.address, max_attempts=args.max_attempts)
    for r in recordings:
        if r not in todo:
            progress.event("skip", name=r.name, input=str(r.path))
    try:
        failures = _run_on_ray(args, todo, out_root, made_from["options"], made_from, progress) if todo else []
    except KeyboardInterrupt:
        progress.event("interrupted")
        progress.close()
        write_aggregate(out_root)
        print(f"{PROG}: interrupted; finished recordings are kept, unfinished ones left no outputs",
              file=sys.stderr)
        return 130
    except StartError as e:
        progress.event("error", error=str(e))
        progress.close()
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    wall = round(time.monotonic() - progress.t0, 3)
    progress.event("end", finished=progress.done, failed=len(failures), skipped=len(recordings) - len(todo),
                   frames=progress.frames, wall_s=wall)
    progress.close()
    report = write_aggregate(out_root)
    _print_result(report, len(recordings), len(recordings) - len(todo), failures, out_root)
    return 1 if failures else 0


def _print_result(report: dict, total: int, skipped: int, failures: list[dict], out_root: Path) -> None:
    o = report["overall"]
    print(f"{total} recordings: {total - skipped - len(failures)} replayed, {skipped} already done, "
          f"{len(failures)} failed")
    print(f"archive {out_root}: {o['finished']} finished, {o['failed']} failed; frames in {o['frames_in']}, "
          f"out {o['frames_out']}, failed {o['frames_failed']}; {o['frames_per_s']} frames/s per replayer")
    if o["activity_accuracy"] is not None:
        print(f"against ground truth: activity accuracy {o['activity_accuracy']:.1%}"
              + (f", foreground mIoU {o['miou_foreground_mask_weighted']:.1%}"
                 if o["miou_foreground_mask_weighted"] is not None else ""))
    _print_worst(report)
    print(f"wrote {out_root / 'aggregate.json'}, aggregate.csv, aggregate.png, report.html, progress.jsonl")
    print(f"browse: {(out_root / 'report.html').as_uri()}")
    if failures:
        print(f"{PROG}: {len(failures)} recording(s) failed:", file=sys.stderr)
        for f in failures:
            print(f"  {f['name']} ({f['input']}): {f['error']}", file=sys.stderr)


def _print_worst(report: dict, shown: int = 3) -> None:
    """The worst recordings by each figure, a line each (figures no recording has are left out)."""
    lines = [f"  {f.label}: " + ", ".join(f"{name} {f.show(value)}" for name, value in report["worst"][f.key][:shown])
             for f in FIGURES if report["worst"][f.key]]
    if lines:
        print("worst recordings (all of them in report.html):", *lines, sep="\n")


def _run_on_ray(args, todo: list, out_root: Path, options: dict, made_from: dict, progress) -> list[dict]:
    previous = signal.getsignal(signal.SIGTERM)
    dispatcher = None
    try:
        with Cluster(args.address, num_cpus=args.num_cpus, num_gpus=args.num_gpus) as cluster:
            signal.signal(signal.SIGTERM, _sigterm_as_interrupt)  # after ray.init, which sets its own
            ray = cluster.ray
            cpus, gpus = cluster.resources()
            count, cpus_per, gpus_per = _sizing(args, cpus, gpus, len(todo))
            if args.address is None and (count * cpus_per > cpus or count * gpus_per > gpus):
                raise StartError(f"{count} replayers x ({cpus_per:g} CPU, {gpus_per:g} GPU) do not fit in this "
                                  f"machine's {cpus:g} CPUs and {gpus:g} GPUs (see --replayers, --num-gpus)")
            actors = start_replayers(cluster, count, cpus=cpus_per, gpus=gpus_per, memory=args.memory_per_replayer,
                                     options=options, restarts=len(todo) * args.max_attempts)
            progress.event("cluster", cpus=cpus, gpus=gpus, replayers=count, cpus_per_replayer=cpus_per,
                           gpus_per_replayer=gpus_per, ray_temp_dir=str(cluster.temp_dir or ""))
            try:
                info = ray.get([a.ready.remote() for a in actors], timeout=START_TIMEOUT_S)
            except Exception as e:  # noqa: BLE001 - the model failed to load, or no node could take them
                raise StartError(f"the replayers did not start: {short_error(e)}"
                                  + (f" (Ray's logs: {cluster.temp_dir})" if cluster.temp_dir else "")) from e
            progress.event("replayers", replayers=info)
            progress.replaying()
            t0 = time.monotonic()
            dispatcher = Dispatcher(ray, actors, out_root, made_from, video=args.video,
                                    max_attempts=args.max_attempts, progress=progress)
            failures = dispatcher.run(todo)
            progress.event("replayed", wall_s=round(time.monotonic() - t0, 3), replayers=count)
            for actor in actors:
                ray.kill(actor, no_restart=True)
            return failures
    finally:
        signal.signal(signal.SIGTERM, previous)
        # Interrupted: what the stopped replayers left behind (their partials, half a folder).
        for _, rec in (dispatcher.in_flight.values() if dispatcher else ()):
            clear_folder(rec.folder(out_root))
