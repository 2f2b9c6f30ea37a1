"""Weights files are data: a pickle that would run code on load is refused with a clear error."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from endoarss_ros.model import UnsafeCheckpointError, load_model
from endoarss_ros.model.weights import read_state_dict


class _Payload:
    """Unpickling this calls os.makedirs(marker): a stand-in for arbitrary code execution."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_code_executing_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "payload": _Payload(str(marker))}, path)
    with pytest.raises(UnsafeCheckpointError, match="evil.pt"):
        load_model(path)
    assert not marker.exists(), "the payload ran"


def test_plain_pickle_with_code_is_refused(tmp_path):
    marker = tmp_path / "pwned2"
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"w": _Payload(str(marker))}, f, protocol=2)
    with pytest.raises(UnsafeCheckpointError, match="refusing to load"):
        read_state_dict(path)
    assert not marker.exists()
