"""The driver loop of `endoarss replay-many`: recordings handed to replayer actors one at a time, the largest
first; a replayer that dies is restarted by Ray and gets work again only once it answers (its model reloaded);
the recording it was working on is retried up to ``max_attempts``; a recording that fails for a reason of its
own is recorded as failed at once. Ray is passed in (``ray``), never imported at module level."""
from __future__ import annotations

import time
from collections import deque
from pathlib import Path

from endoarss_ros.bag.archive import Recording, clear_folder, record_failure, recording_stat

PROBE_INTERVAL_S = 0.5  # how often a restarting replayer is asked whether it is back


def short_error(error: BaseException) -> str:
    """A Ray error in one line: its type and the first line of its message."""
    first = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first}"[:300]


class Dispatcher:
    def __init__(self, ray, actors: list, out_root: Path, made_from: dict, *, video: bool, max_attempts: int,
                 progress):
        self.ray, self.actors, self.out_root, self.made_from = ray, actors, Path(out_root), made_from
        self.video, self.max_attempts, self.progress = video, max_attempts, progress
        self.queue: deque[Recording] = deque()
        self.attempts: dict[str, int] = {}
        self.failures: list[dict] = []
        self.idle = list(range(len(actors)))
        self.in_flight: dict = {}  # ref -> (replayer, recording): after an interrupt, what was cut short
        self.probes: dict = {}  # ref of a ready() call -> replayer
        self.probe_at: dict[int, float] = {}  # replayer -> when to ask it again
        self.lost: set[int] = set()

    def run(self, todo: list[Recording]) -> list[dict]:
        """Replay ``todo``; returns the failures (name, input, error, attempts)."""
        self.queue.extend(todo)
        while self.in_flight or (self.queue and len(self.lost) < len(self.actors)):
            self._hand_out()
            refs = list(self.in_flight) + list(self.probes)
            if not refs:
                time.sleep(0.05)
                continue
            for ref in self.ray.wait(refs, num_returns=1, timeout=PROBE_INTERVAL_S)[0]:
                if ref in self.probes:
                    self._on_probe(ref)
                else:
                    self._on_result(ref)
        for rec in list(self.queue):  # every replayer is gone for good
            self._fail(rec, "no replayer left: every replayer died and could not be restarted")
        return self.failures

    def _hand_out(self) -> None:
        now = time.monotonic()
        for index, when in list(self.probe_at.items()):
            if when <= now:
                del self.probe_at[index]
                self.probes[self.actors[index].ready.remote()] = index
        while self.idle and self.queue:
            index, rec = self.idle.pop(0), self.queue.popleft()
            self.attempts[rec.name] = self.attempts.get(rec.name, 0) + 1
            job = {"input": str(rec.path), "folder": str(rec.folder(self.out_root)),
                   "output": str(rec.output(self.out_root)), "video": self.video,
                   "made_from": dict(self.made_from, input=recording_stat(rec.path))}
            self.in_flight[self.actors[index].replay.remote(job)] = (index, rec)
            self.progress.event("start", name=rec.name, input=str(rec.path), replayer=index,
                                attempt=self.attempts[rec.name])

    def _on_probe(self, ref) -> None:
        from ray.exceptions import ActorDiedError, RayError

        index = self.probes.pop(ref)
        try:
            info = self.ray.get(ref)
        except ActorDiedError as e:  # out of restarts, or its model no longer loads
            self.lost.add(index)
            self.progress.event("replayer_lost", replayer=index, error=short_error(e))
            self.progress.say(f"replayer {index} is gone: {short_error(e)}")
            return
        except RayError:  # still restarting
            self.probe_at[index] = time.monotonic() + PROBE_INTERVAL_S
            return
        self.progress.event("replayer_back", replayer=index, **info)
        self.idle.append(index)

    def _on_result(self, ref) -> None:
        from ray.exceptions import RayError, RayTaskError

        index, rec = self.in_flight.pop(ref)
        try:
            result = self.ray.get(ref)
            self.idle.append(index)
        except RayTaskError as e:  # an error in the actor's own code, the replayer itself is fine
            result = {"status": "failed", "error": short_error(e)}
            self.idle.append(index)
        except RayError as e:  # the replayer died (killed, out of memory, node lost); Ray restarts it
            result = {"status": "retry", "error": f"replayer died: {short_error(e)}"}
            self.probe_at[index] = time.monotonic()
        if result["status"] == "ok":
            self.progress.event("ok", name=rec.name, replayer=index, **result)
            self.progress.finished(True, result["frames_out"])
        elif result["status"] == "retry" and self.attempts[rec.name] < self.max_attempts:
            self.progress.event("retry", name=rec.name, replayer=index, error=result["error"],
                                attempt=self.attempts[rec.name])
            self.progress.say(f"{rec.name}: {result['error']}; retrying")
            self.queue.appendleft(rec)
        else:
            self._fail(rec, result["error"])

    def _fail(self, rec: Recording, error: str) -> None:
        failure = {"name": rec.name, "input": str(rec.path), "error": error, "attempts": self.attempts.get(rec.name, 0)}
        clear_folder(rec.folder(self.out_root))
        record_failure(rec, self.out_root, failure)
        self.failures.append(failure)
        self.progress.event("failed", **failure)
        self.progress.finished(False)
        self.progress.say(f"failed: {rec.name}: {error}")
