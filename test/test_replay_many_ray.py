"""`endoarss replay-many` on real Ray clusters (no mocks), each run a separate `endoarss` process:

* an embedded cluster with 2 logical GPUs: several small bags and a damaged one; the replayer working on the
  largest recording is SIGKILLed mid-run and the recording retried; outputs equal plain `endoarss replay`
  message for message; the aggregate against the summaries; nothing in $HOME; no Ray process survives;
* Ctrl-C stops a run and its cluster with nothing left behind;
* a rerun on a separate cluster (`ray start --head` in its own process, its own token) joined with --address,
  stopped by PID, skips what is finished and redoes a changed input.

Every process a run starts inherits a marker variable, so the tests find them (and any survivor) by PID.
"""
from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from endoarss_ros.bag.synth_bag import write_synth_bag
from test.conftest import REPO

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                reason="ray is not installed (scripts/setup_env.sh installs requirements/cluster.txt)")
MARK = "ENDOARSS_TEST_RAY_RUN"
FRAMES = {"big": 40, "a": 8, "b": 6}


def _env(home: Path, mark: str, **extra) -> dict:
    env = dict(os.environ, HOME=str(home), PYTHONUNBUFFERED="1", **{MARK: mark}, **extra)
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)
    env.pop("RAY_ADDRESS", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return env


def _marked_pids(mark: str) -> list[int]:
    """Live processes (not zombies) that inherited ``MARK=mark``."""
    needle = f"{MARK}={mark}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if needle in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _assert_none_survive(mark: str, grace_s: float = 10.0) -> None:
    deadline = time.monotonic() + grace_s
    while _marked_pids(mark) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = _marked_pids(mark)
    assert not left, "processes left behind: " + "; ".join(
        (Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ")[:120]).decode(errors="replace") for p in left)


def _events(out: Path) -> list[dict]:
    path = out / "progress.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _many(inputs, out: Path, model: str, *extra) -> list[str]:
    return [sys.executable, "-m", "endoarss_ros.cli", "replay-many", *map(str, inputs), "-o", str(out),
            "--model", model, "--threads", "1", "--no-progress", *extra]


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from endoarss_ros.model import ModelConfig, build_model, save_model

    root = tmp_path_factory.mktemp("ray_archive")
    model = str(save_model(build_model(ModelConfig.endoarss_tiny()), root / "tiny"))
    inputs = root / "in"
    write_synth_bag(inputs / "big", seconds=FRAMES["big"] / 10, fps=10, size=(48, 64), seed=1)
    write_synth_bag(inputs / "a", seconds=FRAMES["a"] / 10, fps=10, size=(48, 64), seed=2, storage="sqlite3")
    write_synth_bag(inputs / "b", seconds=FRAMES["b"] / 10, fps=10, size=(48, 64), seed=3, encoding="jpeg")
    damaged = inputs / "damaged"
    write_synth_bag(damaged, seconds=0.4, fps=10, size=(48, 64), seed=4)
    data = next(damaged.glob("*.mcap"))
    os.truncate(data, data.stat().st_size // 2)
    home = root / "home"
    home.mkdir()
    return {"root": root, "model": model, "inputs": inputs, "home": home}


@pytest.fixture(scope="module")
def killed_run(archive):
    """The first run; the replayer that starts on 'big' is SIGKILLed as soon as it has begun."""
    out, mark = archive["root"] / "out", uuid.uuid4().hex
    cmd = _many([archive["inputs"]], out, archive["model"], "--num-gpus", "2", "--gpus-per-replayer", "1")
    proc = subprocess.Popen(cmd, env=_env(archive["home"], mark), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    killed, ray_pids, deadline = None, [], time.monotonic() + 150
    try:
        while killed is None and proc.poll() is None and time.monotonic() < deadline:
            events = _events(out)
            replayers = next((e["replayers"] for e in events if e["event"] == "replayers"), None)
            start = next((e for e in events if e["event"] == "start" and e["name"] == "big"), None)
            if replayers and start:
                ray_pids = _marked_pids(mark)
                killed = replayers[start["replayer"]]["pid"]
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.05)
        stdout, stderr = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:
            proc.kill()
    return {"rc": proc.returncode, "stdout": stdout, "stderr": stderr, "out": out, "mark": mark,
            "killed": killed, "ray_pids": ray_pids, "events": _events(out)}


def test_killed_replayer_is_retried_damaged_bag_fails_and_nothing_is_left(archive, killed_run):
    run, out = killed_run, killed_run["out"]
    assert run["killed"] is not None, run["stderr"]
    assert run["rc"] == 1, run["stderr"]  # the damaged bag failed
    ev = run["events"]
    retry = [e for e in ev if e["event"] == "retry"]
    assert [e["name"] for e in retry] == ["big"] and "replayer died" in retry[0]["error"]
    ok = {e["name"]: e for e in ev if e["event"] == "ok"}
    assert set(ok) == {"big", "a", "b"} and ok["big"]["pid"] != run["killed"]
    assert {n: ok[n]["frames_out"] for n in ok} == FRAMES
    (failed,) = [e for e in ev if e["event"] == "failed"]
    assert failed["name"] == "damaged" and failed["attempts"] == 1 and "BagError" in failed["error"]
    assert "damaged" in run["stderr"] and "1 recording(s) failed" in run["stderr"]
    assert json.loads((out / "damaged" / "failure.json").read_text())["error"] == failed["error"]
    # Placement: each replayer got its own (logical) GPU and, without CUDA, ran on the CPU.
    (replayers,) = [e["replayers"] for e in ev if e["event"] == "replayers"]
    assert sorted(g for r in replayers for g in r["gpu_ids"]) == ["0", "1"]
    assert {r["device"] for r in replayers} == {"cpu"}
    # Outputs: what `endoarss replay` writes, and no partial of the killed attempt.
    for name in FRAMES:
        assert {p.name for p in (out / name).iterdir()} == {name, f"{name}.summary.json", f"{name}.timeline.png"}
    assert not [p for p in out.rglob("*") if ".partial-" in p.name or ".tmp-" in p.name]
    assert sorted(os.listdir(out / "damaged")) == ["failure.json"]
    # Hygiene: Ray ran (its processes were seen), none survive, nothing went to $HOME.
    assert len(run["ray_pids"]) >= 4
    _assert_none_survive(run["mark"])
    assert os.listdir(archive["home"]) == []


def _plain(value):
    """A deserialized message as plain data; the one timing field (processing_ms) left out, NaN comparable."""
    if hasattr(value, "__dataclass_fields__"):
        return {k: _plain(getattr(value, k)) for k in value.__dataclass_fields__ if k != "processing_ms"}
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def _messages(bag: Path) -> dict:
    from rosbags.highlevel import AnyReader

    from endoarss_ros.bag.msgtypes import typestore

    out: dict = {}
    with AnyReader([bag], default_typestore=typestore()) as reader:
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t, _plain(reader.deserialize(raw, conn.msgtype))))
    return out


def test_outputs_equal_plain_replay_and_record_what_they_were_made_from(archive, killed_run, tmp_path):
    """`endoarss replay` of the retried recording and of another one: the same messages; it never loads ray."""
    out = killed_run["out"]
    code = ("import sys; from endoarss_ros.cli import main; import endoarss_ros.ros.perception_node\n"
            "for name in ('big', 'a'):\n"
            f"    rc = main(['replay', '{archive['inputs']}/' + name, '-o', '{tmp_path}/' + name, '--model',"
            f" '{archive['model']}', '--threads', '1', '--no-progress'])\n"
            "    assert rc == 0, rc\n"
            "assert 'ray' not in sys.modules, 'endoarss replay imported ray'\n")
    subprocess.run([sys.executable, "-c", code], env=_env(archive["home"], "plain"), check=True, timeout=120,
                   stdout=subprocess.DEVNULL)
    weights = hashlib.sha256(Path(archive["model"]).read_bytes()).hexdigest()
    for name in ("big", "a"):
        ours, plain = _messages(out / name / name), _messages(tmp_path / name)
        assert set(ours) == set(plain) and "/endoarss/status" in ours
        for topic in plain:
            assert len(ours[topic]) == len(plain[topic]) > 0, topic
            assert ours[topic] == plain[topic], topic
        made_from = json.loads((out / name / f"{name}.summary.json").read_text())["made_from"]
        assert made_from["input"]["path"] == str(archive["inputs"] / name)
        assert made_from["weights"]["sha256"] == weights
        assert made_from["options"]["threads"] == 1 and made_from["package_version"]


def test_aggregate_is_built_from_the_summaries(killed_run):
    out = killed_run["out"]
    report = json.loads((out / "aggregate.json").read_text())
    rows = {r["name"]: r for r in report["recordings"]}
    assert set(rows) == set(FRAMES) | {"damaged"}
    summaries = {n: json.loads((out / n / f"{n}.summary.json").read_text()) for n in FRAMES}
    for name, s in summaries.items():
        r = rows[name]
        assert (r["status"], r["frames_in"], r["frames_out"]) == ("ok", s["frames_in"], s["frames_out"])
        assert r["frames_per_s"] == s["throughput"]["frames_per_s"]
        assert r["activity_accuracy"] == s["ground_truth"]["activity_accuracy"]
        assert sum(r["activity_frames"].values()) == s["frames_out"]
        assert r["instrument_tracks"] == sum(t["tracks"] for t in s["instruments"].values())
    o = report["overall"]
    assert (o["recordings"], o["finished"], o["failed"]) == (4, 3, 1)
    assert o["frames_out"] == sum(FRAMES.values()) == sum(o["activity_frames"].values())
    assert o["frames_with_activity_truth"] == sum(s["ground_truth"]["frames_with_activity"]
                                                  for s in summaries.values())
    assert [f["name"] for f in report["failed"]] == ["damaged"]
    with open(out / "aggregate.csv") as f:
        csv_rows = {r["name"]: r for r in csv.DictReader(f)}
    assert set(csv_rows) == set(rows) and csv_rows["damaged"]["status"] == "failed"
    assert int(csv_rows["big"]["frames_out"]) == FRAMES["big"]
    assert (out / "aggregate.png").stat().st_size > 1000
    assert set(_report_rows(out)) == set(rows)
    # The console's last lines: the worst recordings by each figure, then the report's address.
    lines = killed_run["stdout"].strip().splitlines()
    assert lines[-1] == f"browse: {(out / 'report.html').as_uri()}"
    worst_fps = sorted(FRAMES, key=lambda n: (rows[n]["frames_per_s"], n))[:3]
    assert f"  frames per second: {worst_fps[0]} " in killed_run["stdout"]
    assert all(n in next(x for x in lines if x.startswith("  frames per second:")) for n in worst_fps)


def _report_rows(out: Path) -> dict:
    """report.html's table rows (its JSON block) by name."""
    from html.parser import HTMLParser

    class Data(HTMLParser):
        found, text = False, ""

        def handle_starttag(self, tag, attrs):
            self.found = tag == "script" and ("id", "data") in attrs

        def handle_data(self, data):
            if self.found:
                self.text += data

    parser = Data()
    parser.feed((out / "report.html").read_text(encoding="utf-8"))
    return {r[0]: r for r in json.loads(parser.text)["rows"]}


def test_ctrl_c_stops_the_run_and_its_cluster(archive, tmp_path):
    out, mark = tmp_path / "out", uuid.uuid4().hex
    proc = subprocess.Popen(_many([archive["inputs"] / "big", archive["inputs"] / "a"], out, archive["model"]),
                            env=_env(archive["home"], mark), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 120
        while not any(e["event"] == "start" for e in _events(out)) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        time.sleep(0.5)  # the replayers are at work
        assert _marked_pids(mark)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    _assert_none_survive(mark)
    assert not [p for p in out.rglob("*") if ".partial-" in p.name]
    assert not (out / "big" / "big.summary.json").exists()  # cut short: no outputs, not even a summary
    assert json.loads((out / "aggregate.json").read_text())["overall"]["failed"] == 0
    assert os.listdir(archive["home"]) == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "ray start --head exited"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"ray start --head did not listen on {port} within {timeout_s} s")


def test_rerun_on_a_cluster_started_with_ray_start_skips_finished_and_redoes_changed_input(archive, killed_run):
    """`ray start --head` in its own process (loopback address, temp dir, own token), joined with --address,
    then stopped by its PID. The rerun skips what is finished and redoes the changed input (and the damaged one,
    which fails again); the aggregate still covers every recording."""
    out, port, mark, token = killed_run["out"], _free_port(), uuid.uuid4().hex, uuid.uuid4().hex
    temp = Path(f"/tmp/endoarss-test-{mark[:8]}")  # short: Ray's sockets live under it
    env = _env(archive["home"], mark, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_USAGE_STATS_ENABLED="0",
               RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
    before = {n: (out / n / f"{n}.summary.json").stat().st_mtime_ns for n in FRAMES}
    data = next((archive["inputs"] / "a").glob("*.db3"))
    os.utime(data, ns=(data.stat().st_atime_ns, data.stat().st_mtime_ns + 1_000_000))
    head = subprocess.Popen([str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
                             f"--port={port}", "--node-ip-address=127.0.0.1", f"--temp-dir={temp}", "--num-cpus=2",
                             "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, head)
        run = subprocess.run(_many([archive["inputs"]], out, archive["model"], "--address", f"127.0.0.1:{port}"),
                             env=env, capture_output=True, text=True, timeout=150)
        assert head.poll() is None  # the driver left the cluster running
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        shutil.rmtree(temp, ignore_errors=True)
    assert run.returncode == 1 and "damaged" in run.stderr, run.stderr
    ev = _events(out)[len(killed_run["events"]):]
    assert next(e for e in ev if e["event"] == "cluster")["ray_temp_dir"] == ""  # not an embedded cluster
    assert {e["name"] for e in ev if e["event"] == "skip"} == {"big", "b"}
    assert {e["name"] for e in ev if e["event"] == "ok"} == {"a"}
    after = {n: (out / n / f"{n}.summary.json").stat().st_mtime_ns for n in FRAMES}
    assert after["big"] == before["big"] and after["b"] == before["b"] and after["a"] != before["a"]
    overall = json.loads((out / "aggregate.json").read_text())["overall"]
    assert (overall["finished"], overall["failed"], overall["frames_out"]) == (3, 1, sum(FRAMES.values()))
    assert set(_report_rows(out)) == set(FRAMES) | {"damaged"}  # the joined run's report shows every recording
    _assert_none_survive(mark, grace_s=20)
    assert os.listdir(archive["home"]) == []
