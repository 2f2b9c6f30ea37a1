"""The video + phase layout: reading it back, and its errors naming file and line."""
from __future__ import annotations

import numpy as np
import pytest

from endoarss_ros.data.classes import MTLESD
from endoarss_ros.data.phase_layout import (
    PhaseLayoutError,
    find_videos,
    read_phase_file,
    read_video,
    write_phase_file,
    write_video,
)

NAMES = MTLESD.activity_classes


def _phase(path, text):
    path.write_text(text)
    return path


def test_subset_and_name_variants(tmp_path):
    p = _phase(tmp_path / "a-phase.txt", "Frame\tPhase\n0\tMarking\n1\tCircumferentialIncision\n"
                                         "5\tsubmucosal_dissection\n\n")
    assert read_phase_file(p, NAMES) == {0: 0, 1: 1, 5: 2}


@pytest.mark.parametrize("text, line, words", [
    ("Frame Phase\n0\tMarking\n", 1, "header"),
    ("Frame\tPhase\n0\tMarking\n1\tClipping\n", 3, "unknown phase 'Clipping'"),
    ("Frame\tPhase\nx\tMarking\n", 2, "FRAME_INDEX"),
    ("Frame\tPhase\n0\tMarking\textra\n", 2, "FRAME_INDEX"),
    ("Frame\tPhase\n0\tMarking\n0\tMarking\n", 3, "twice"),
])
def test_errors_name_file_and_line(tmp_path, text, line, words):
    p = _phase(tmp_path / "v-phase.txt", text)
    with pytest.raises(PhaseLayoutError, match=words) as e:
        read_phase_file(p, NAMES)
    assert f"{p}:{line}:" in str(e.value)


def test_folder_pairs_videos_with_phase_files(tmp_path):
    frames = [np.full((32, 48, 3), 40 * i, np.uint8) for i in range(5)]
    assert write_video(tmp_path / "case1.mp4", frames, 2.0) == 5
    write_phase_file(tmp_path / "case1-phase.txt", [0, 0, -1, 1, 2], NAMES)
    (entry,) = find_videos(tmp_path)
    assert entry.name == "case1" and read_phase_file(entry.phases, NAMES) == {0: 0, 1: 0, 3: 1, 4: 2}
    read = list(read_video(entry.video))
    assert [(i, t) for i, t, _ in read] == [(i, i / 2.0) for i in range(5)]
    assert read[0][2].shape == (32, 48, 3) and abs(int(read[4][2].mean()) - 160) < 8

    (tmp_path / "case2.mp4").write_bytes((tmp_path / "case1.mp4").read_bytes())
    with pytest.raises(PhaseLayoutError, match="case2.mp4: no phase file case2-phase.txt"):
        find_videos(tmp_path)
    (tmp_path / "case2.mp4").unlink()
    _phase(tmp_path / "case3-phase.txt", "Frame\tPhase\n")
    with pytest.raises(PhaseLayoutError, match="case3-phase.txt: no video case3"):
        find_videos(tmp_path)
    with pytest.raises(PhaseLayoutError, match="not a folder"):
        find_videos(tmp_path / "case1-phase.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PhaseLayoutError, match="no videos"):
        find_videos(tmp_path / "empty")
