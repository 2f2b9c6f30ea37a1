"""`endoarss info WEIGHTS` prints architecture, classes, parameter counts and FLOPs."""
from __future__ import annotations

import re

import pytest
import torch

from endoarss_ros import cli
from endoarss_ros.model import ModelConfig, build_model, count_parameters, estimate_flops, save_model

torch.set_num_threads(min(torch.get_num_threads(), 2))


@pytest.fixture
def info_only(monkeypatch):
    # Only our subcommand: others (e.g. the ROS check) may need ROS, which this test does not.
    monkeypatch.setattr(cli, "SUBCOMMANDS", {"info": cli.SUBCOMMANDS["info"]})


def test_info_prints_counts_and_flops(tmp_path, capsys, info_only):
    model = build_model(ModelConfig.endoarss_tiny(seg_classes=["background", "tool", "tissue"],
                                                  activity_classes=["idle", "cutting"]))
    path = save_model(model, tmp_path / "tiny")
    assert cli.main(["info", str(path), "--input-size", "224x280"]) == 0
    out = capsys.readouterr().out
    counts = count_parameters(model)
    m = re.search(r"parameters: total ([\d,]+) trainable ([\d,]+)", out)
    assert m, out
    assert int(m.group(1).replace(",", "")) == counts["total"]
    assert int(m.group(2).replace(",", "")) == counts["trainable"]
    assert "family: endoarss" in out and "ViT-tiny/14" in out
    assert "segmentation classes (3): 0=background, 1=tool, 2=tissue" in out
    assert "activity classes (2): 0=idle, 1=cutting" in out
    flops = re.search(r"FLOPs per frame at 224x280: ([\d,]+)", out)
    assert flops and int(flops.group(1).replace(",", "")) == estimate_flops(model.eval(), (224, 280))


def test_info_reports_bad_file(tmp_path, capsys, info_only):
    bad = tmp_path / "x.pth"
    torch.save({"something": torch.zeros(1)}, bad)
    assert cli.main(["info", str(bad)]) == 2
    assert "unrecognised weights layout" in capsys.readouterr().err


def test_estimate_flops_scales_with_input():
    model = build_model(ModelConfig.endoarss_tiny()).eval()
    f224 = estimate_flops(model, (224, 224))
    assert 1e9 < f224 < 5e9
    # The model resizes to its working resolution: FLOPs hardly depend on the frame size.
    assert abs(estimate_flops(model, (448, 448)) - f224) / f224 < 0.05
