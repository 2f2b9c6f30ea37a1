"""Training loop, resume, config overrides, and the train / eval CLIs on tiny synthetic data."""
import json

import pytest
import torch
import yaml

from endoarss_ros import cli
from endoarss_ros.training.config import TrainConfig, build_model_config
from endoarss_ros.training.loop import train

TINY = [
    "model.overrides.input_size=[56,56]", "model.overrides.head.neck_channels=32",
    "model.overrides.head.aspp_channels=16", "model.overrides.head.activity_channels=16",
    "model.overrides.head.stem_channels=8", "model.overrides.head.decoder_channels=16",
    "data.synthetic.render_size=112", "data.synthetic.train=8", "data.synthetic.val=3", "data.synthetic.test=3",
    "batch_size=8", "eval_batch_size=8", "progress=false", "threads=2",
]


def tiny_config(tmp_path, *extra):
    return TrainConfig.load(None, [f"out_dir={tmp_path}", *TINY, *extra])


def test_overrides_and_yaml_round_trip(tmp_path):
    cfg = tiny_config(tmp_path, "optim.lr=1e-3", "weighting.method=dbmtl", "data.val=0.25", "freeze=adapters")
    assert cfg.optim.lr == pytest.approx(1e-3) and cfg.weighting.method == "dbmtl"
    assert cfg.data.val == 0.25 and cfg.freeze == "adapters"
    assert build_model_config(cfg).input_size == (56, 56)
    path = tmp_path / "c.yaml"
    cfg.to_yaml(path)
    again = TrainConfig.load(path)
    assert again.to_dict() == cfg.to_dict()
    with pytest.raises(KeyError):
        TrainConfig.load(None, ["optim.nope=1"])
    with pytest.raises(ValueError):
        TrainConfig.load(None, ["weighting.method=magic"])


def test_a_few_steps_reduce_the_loss(tmp_path):
    # the same 8 frames each epoch (one batch, no augmentation): the training loss must go down
    cfg = tiny_config(tmp_path, "name=steps", "epochs=4", "data.augment=false", "optim.lr=2e-3",
                      "optim.scheduler=none", "evaluate_test=false", "seg_dice_weight=0.5")
    train(cfg)
    hist = json.loads((cfg.run_dir / "metrics.json").read_text())["epochs"]
    seg = [h["train"]["segmentation"] for h in hist]
    act = [h["train"]["activity"] for h in hist]
    assert seg[-1] < seg[0] and seg[-1] + act[-1] < seg[0] + act[0]
    for f in ("config.yaml", "classes.yaml", "metrics.json", "best.safetensors", "best.yaml", "last.safetensors",
              "trainer_state.pt", "loss_curves.png", "iou_per_class_validation.png",
              "activity_confusion_validation.png"):
        assert (cfg.run_dir / f).is_file(), f


@pytest.mark.parametrize("method", ["dbmtl", "stch"])
def test_resume_continues_from_the_saved_epoch_bit_identically(tmp_path, method):
    extra = ["epochs=2", f"weighting.method={method}", "weighting.stch_warmup_epochs=1", "evaluate_test=false",
             "data.synthetic.train=6", "batch_size=3"]
    full = train(tiny_config(tmp_path, "name=full", *extra))
    cfg = tiny_config(tmp_path, "name=parts", *extra)
    first = train(cfg, stop_after=1)
    assert first["interrupted_after"] == 1
    state = torch.load(cfg.run_dir / "trainer_state.pt", weights_only=True)
    assert state["epoch"] == 1
    resumed = train(cfg, resume=True)
    hist = json.loads((cfg.run_dir / "metrics.json").read_text())["epochs"]
    assert [h["epoch"] for h in hist] == [1, 2]
    assert resumed["param_hash"] == full["param_hash"]


def test_train_and_eval_cli_end_to_end_with_robustness(tmp_path, capsys):
    from endoarss_ros.data.layout import write_synthetic_dataset

    root = tmp_path / "ds"
    write_synthetic_dataset(root, {"train": 6, "val": 3, "test": 4}, size=112, seed=5)
    args = ["train", "--data", str(root), "--layout", "released", "--name", "cli", "--out-dir", str(tmp_path),
            "--epochs", "1", "--weighting", "stch", "--no-progress"]
    for o in TINY:
        if not o.startswith("data.synthetic"):
            args += ["--set", o]
    assert cli.main(args) == 0
    run = tmp_path / "cli"
    assert yaml.safe_load((run / "config.yaml").read_text())["weighting"]["method"] == "stch"
    assert json.loads((run / "metrics.json").read_text())["weighting"] == "stch"
    assert (run / "test_metrics.json").is_file()

    out = tmp_path / "report.json"
    assert cli.main(["eval", str(run / "best.safetensors"), "--data", str(root), "--split", "test",
                     "--robustness", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mIoU foreground" in text and "Robustness" in text
    rep = json.loads(out.read_text())
    assert rep["data"]["frames"] == 4 and rep["background_included"] == {"miou_fg": False, "miou_all": True}
    corr = rep["robustness"]["corruptions"]
    assert set(corr) == {"gaussian_noise", "gaussian_blur", "jpeg", "smoke", "blood"}
    for r in corr.values():
        assert set(r["drop"]) == {"activity_accuracy", "miou_fg"}
        assert r["drop"]["miou_fg"] == pytest.approx(rep["summary"]["miou_fg"] - r["miou_fg"])
        assert set(r["severities"]) == {"1", "2", "3"}


def test_corruptions_change_the_image_and_keep_its_shape():
    import numpy as np

    from endoarss_ros.data.synth import generate_frame
    from endoarss_ros.training.robustness import CORRUPTIONS

    img, _ = generate_frame(0, 1, 64)
    for name, fn in CORRUPTIONS.items():
        prev = 0.0
        for s in (1, 2, 3):
            out = fn(img, s, np.random.default_rng(0))
            assert out.shape == img.shape and out.dtype == np.uint8
            diff = float(np.abs(out.astype(float) - img).mean())
            assert diff > prev * 0.8, (name, s)  # roughly stronger with severity
            prev = diff
        assert prev > 0.5, name


def test_adapter_freezing_leaves_backbone_weights_untouched(tmp_path):
    from endoarss_ros.model import load_model
    from endoarss_ros.training.loop import build_training_model

    cfg = tiny_config(tmp_path, "name=frozen", "epochs=1", "freeze=adapters", "evaluate_test=false")
    torch.manual_seed(cfg.seed)  # train() builds its model from this seed too
    before = {k: v.clone() for k, v in build_training_model(cfg).state_dict().items()}
    train(cfg)
    after = load_model(cfg.run_dir / "last.safetensors").state_dict()
    assert torch.equal(before["backbone.blocks.0.attn.qkv.weight"], after["backbone.blocks.0.attn.qkv.weight"])
    lora = next(k for k in before if k.startswith("backbone.") and "lora_B" in k)
    head = next(k for k in before if k.startswith("activity_head") and k.endswith("weight"))
    assert not torch.equal(before[lora], after[lora])
    assert not torch.equal(before[head], after[head])


def test_synthetic_wide_frames_do_not_reveal_the_activity():
    # 5:4 renders must cover every activity, or the aspect ratio alone would predict the label
    from endoarss_ros.training.data import SyntheticFrames

    ds = SyntheticFrames(0, "train", 18, (28, 28), render_size=32, wide_every=3)
    wide = {ds.activities[i] for i, hw in enumerate(ds.rendered_hw) if hw[1] != hw[0]}
    square = {ds.activities[i] for i, hw in enumerate(ds.rendered_hw) if hw[1] == hw[0]}
    assert wide == square == {0, 1, 2}
    assert sum(hw[1] != hw[0] for hw in ds.rendered_hw) == 6
