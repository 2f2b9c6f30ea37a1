"""Damaged weights files (truncated, bit flips, garbage, a config that does not parse) are a one-line
``WeightsError`` naming the file; ``endoarss info`` prints that line and exits 2, never a traceback."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from endoarss_ros import cli
from endoarss_ros.model import ModelConfig, WeightsError, build_model, load_model, save_model
from endoarss_ros.model.vit import build_vit

torch.set_num_threads(min(torch.get_num_threads(), 2))


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict[str, bytes]:
    """The bytes of a valid file of each kind: ours (safetensors + config) and a torch.save .pth."""
    d = tmp_path_factory.mktemp("good")
    st = save_model(build_model(ModelConfig.endoarss_tiny()), d / "tiny").read_bytes()
    buf = io.BytesIO()
    torch.save(build_vit("tiny").state_dict(), buf)  # a DINOv2-hub-layout backbone
    return {"safetensors": st, "pth": buf.getvalue()}


def _header_len(data: bytes) -> int:
    return int.from_bytes(data[:8], "little")


def _flip(data: bytes, at: int, n: int = 16) -> bytes:
    return data[:at] + bytes(b ^ 0xFF for b in data[at:at + n]) + data[at + n:]


def _header_start(data: bytes) -> int:
    """Where the part that says what the file holds begins: the safetensors JSON, or torch's pickle."""
    return 30 if data[8:9] == b"{" else data.find(b"\x80\x02")


DAMAGE = {
    "truncated_half": lambda d: d[: len(d) // 2],
    "truncated_in_header": lambda d: d[: 8 + _header_len(d) // 2] if d[8:9] == b"{" else d[:40],
    "empty": lambda d: b"",
    "header_length_huge": lambda d: (10**7).to_bytes(8, "little") + d[8:],
    "bit_flips_in_header": lambda d: _flip(d, _header_start(d)),
    "random_bytes": lambda d: os.urandom(4096),
}


@pytest.mark.parametrize("kind", ["safetensors", "pth"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_file_is_one_line_weights_error(tmp_path, good, kind, damage, capsys, monkeypatch):
    path = tmp_path / f"damaged.{kind}"
    path.write_bytes(DAMAGE[damage](good[kind]))
    with pytest.raises(WeightsError) as err:
        load_model(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    assert any(w in message for w in ("truncated", "damaged", "not a weights file")), message

    monkeypatch.setattr(cli, "SUBCOMMANDS", {"info": cli.SUBCOMMANDS["info"]})
    assert cli.main(["info", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("endoarss info: error: ")


def test_bit_flips_in_pth_tensor_data_are_caught(tmp_path, good):
    """torch.load itself does not check the zip's CRC-32s: without the loader's check this file loads."""
    data = good["pth"]
    (tmp_path / "flipped.pth").write_bytes(_flip(data, len(data) // 2))
    with pytest.raises(WeightsError, match=r"flipped\.pth: its data is damaged \(CRC-32 mismatch in .*/data/"):
        load_model(tmp_path / "flipped.pth")


def test_damaged_stored_config_is_named(tmp_path):
    tensors = {"w": torch.zeros(2)}
    save_file(tensors, str(tmp_path / "cfg.safetensors"), metadata={"endoarss_config": '{"family": "endo'})
    with pytest.raises(WeightsError, match=r"cfg\.safetensors: the model config stored in the file cannot be read"):
        load_model(tmp_path / "cfg.safetensors")
    save_file(tensors, str(tmp_path / "cfg2.safetensors"), metadata={"endoarss_config": '{"no_such_field": 1}'})
    with pytest.raises(WeightsError, match="cannot be read"):
        load_model(tmp_path / "cfg2.safetensors")


def test_file_claiming_a_layout_it_does_not_hold(tmp_path):
    """Looks like Hugging Face Dinov2 (a patch embedding) but has no class token or blocks."""
    save_file({"embeddings.patch_embeddings.projection.weight": torch.zeros(192, 3, 14, 14)},
              str(tmp_path / "model.safetensors"))
    with pytest.raises(WeightsError, match=r"not a consistent hf_dinov2 file .*cls_token"):
        load_model(tmp_path / "model.safetensors")


def test_info_on_a_truncated_file_prints_no_traceback(tmp_path, good):
    """The real command in its own process: what a user sees."""
    path = tmp_path / "trunc.safetensors"
    path.write_bytes(good["safetensors"][: len(good["safetensors"]) // 3])
    env = dict(os.environ)
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)
    proc = subprocess.run([sys.executable, "-m", "endoarss_ros.cli", "info", str(path)], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert "trunc.safetensors" in proc.stderr and "SafetensorError" in proc.stderr
