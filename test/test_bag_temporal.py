"""`endoarss replay --temporal-model`: a real synthetic bag through the shared pipeline with a tiny random frame
model and a tiny temporal model bound to it; the output Activity messages say which estimator produced them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from endoarss_ros.bag.replay import ReplayOptions, replay
from endoarss_ros.bag.synth_bag import write_synth_bag
from test.test_bag_replay import _read, engine, tiny_model  # noqa: F401 - the fixtures
from test.test_node_temporal import _save_temporal


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("bag") / "in"
    write_synth_bag(path, seconds=3.0, fps=4, size=(64, 80), encoding="rgb8", seed=2)
    return path


def test_replay_publishes_the_temporal_estimate_once_warm(tmp_path, bag, engine, tiny_model):  # noqa: F811
    temporal = _save_temporal(tmp_path / "t.safetensors", tiny_model, warmup_ticks=2)
    summary = replay(ReplayOptions(input=bag, output=tmp_path / "out", model=tiny_model, engine=engine,
                                   progress=False, timeline="", temporal_model=temporal))
    activity = [m for _, m in _read(tmp_path / "out")["/endoarss/activity"]]
    assert len(activity) == 12
    stamps = np.array([m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in activity])
    tick = np.floor((stamps - stamps[0]) / 0.5 + 1e-9)
    sources = [m.source for m in activity]
    assert all(s == ("temporal" if k >= 2 else "frame_ema") for s, k in zip(sources, tick)), sources
    for a, b in zip(activity, activity[1:]):
        if a.class_id == b.class_id:
            assert b.duration_s == pytest.approx(a.duration_s + 0.25, abs=1e-3)
        else:
            assert b.duration_s == 0.0
    (d,) = summary["temporal"]["topics"].values()
    assert d["ticks"] == "5" and d["resets"] == "0" and d["warm"] == "true"  # the last frame is in tick 5
    # without a temporal model: the frame-wise EMA, as before
    replay(ReplayOptions(input=bag, output=tmp_path / "plain", model=tiny_model, engine=engine, progress=False,
                         timeline=""))
    plain = [m for _, m in _read(tmp_path / "plain")["/endoarss/activity"]]
    assert {m.source for m in plain} == {"frame_ema"}
    np.testing.assert_allclose([m.raw_probabilities for m in plain], [m.raw_probabilities for m in activity])


def test_cli_refuses_a_temporal_model_of_another_frame_model_in_one_line(tmp_path, bag, tiny_model,  # noqa: F811
                                                                       capsys):
    from endoarss_ros.cli import main

    other = _save_temporal(tmp_path / "other.safetensors", tiny_model, frame_model_id="sha256:feedfacefeedface")
    for path, words in ((other, ["sha256:feedfacefeedface", "frame model"]),
                        (str(tmp_path / "absent.safetensors"), ["no such file"])):
        code = main(["replay", str(bag), "-o", str(tmp_path / "o"), "--model", tiny_model, "--device", "cpu",
                     "--temporal-model", path, "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith("endoarss replay: error: temporal model") and "\n" not in err
        for w in words:
            assert w in err
        assert not Path(tmp_path / "o").exists()
