"""`endoarss replay-many` without Ray: the work list (recordings, folders, list files, unique names, largest
first), the input's stat record, the resume check, and the options it shares with `endoarss replay`."""
from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest

from endoarss_ros.bag.archive import Recording, find_recordings, is_finished, recording_stat
from endoarss_ros.bag.reader import BagError
from endoarss_ros.bag.synth_bag import write_synth_bag
from endoarss_ros.cli import build_parser


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("archive")
    write_synth_bag(root / "site_a" / "case", seconds=0.4, fps=10, size=(24, 32), seed=1)
    write_synth_bag(root / "site_b" / "case", seconds=0.2, fps=10, size=(24, 32), seed=2, storage="sqlite3")
    write_synth_bag(root / "site_b" / "long one", seconds=0.8, fps=10, size=(24, 32), seed=3)
    (root / "site_b" / "notes.txt").write_text("not a recording\n")
    (root / "loose.mcap").write_bytes(b"\x89MCAP0\r\n")
    return root


def test_folders_are_searched_names_are_unique_and_the_largest_come_first(archive):
    recs = find_recordings([archive])
    by_path = {r.path: r for r in recs}
    assert set(by_path) == {archive / "site_a" / "case", archive / "site_b" / "case", archive / "site_b" / "long one",
                            archive / "loose.mcap"}
    sizes = [r.size for r in recs]
    assert sizes == sorted(sizes, reverse=True)
    names = [r.name for r in recs]
    assert len(set(names)) == len(names)
    assert by_path[archive / "site_b" / "long one"].name == "long_one"  # no spaces in output names
    assert by_path[archive / "loose.mcap"].name == "loose"
    cases = [by_path[archive / s / "case"].name for s in ("site_a", "site_b")]
    assert all(n.startswith("case-") for n in cases) and cases[0] != cases[1]
    # The same inputs give the same names (a rerun finds its outputs again).
    assert [r.name for r in find_recordings([archive])] == names


def test_list_files_storage_files_and_duplicates(archive, tmp_path):
    listing = tmp_path / "todo.txt"
    listing.write_text(f"# archive of site b\n{archive / 'site_b' / 'case'}\n\n"
                       f"{os.path.relpath(archive / 'site_a' / 'case', tmp_path)}  # relative to the list\n")
    storage_file = next((archive / "site_a" / "case").glob("*.mcap"))
    recs = find_recordings([listing, storage_file, archive / "site_a" / "case"])
    assert sorted(r.path for r in recs) == [archive / "site_a" / "case", archive / "site_b" / "case"]
    with pytest.raises(BagError, match="no such file"):
        find_recordings([tmp_path / "missing"])


def test_recording_stat_and_resume_check(archive, tmp_path):
    bag = archive / "site_a" / "case"
    rec = Recording(bag, "case", 1)
    made_from = {"package_version": "x", "options": {"batch": 4}, "input": recording_stat(bag)}
    assert not is_finished(rec, tmp_path, made_from)
    rec.summary_path(tmp_path).parent.mkdir(parents=True)
    rec.summary_path(tmp_path).write_text(json.dumps({"made_from": made_from}))
    assert is_finished(rec, tmp_path, made_from)
    assert not is_finished(rec, tmp_path, dict(made_from, options={"batch": 8}))
    data = next(bag.glob("*.mcap"))
    st = data.stat()
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # the input changed
    assert not is_finished(rec, tmp_path, dict(made_from, input=recording_stat(bag)))
    rec.summary_path(tmp_path).write_text("{ half a file")
    assert not is_finished(rec, tmp_path, made_from)


def _option_strings(parser, command: str) -> set[str]:
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return {s for a in sub._actions for s in a.option_strings}


def test_replay_many_takes_every_per_recording_option_of_replay():
    parser = build_parser()
    replay, many = _option_strings(parser, "replay"), _option_strings(parser, "replay-many")
    only_single = {"-o", "--output", "--overwrite", "--video", "--timeline", "--summary", "--json", "--no-progress",
                   "-h", "--help"}
    assert replay - only_single <= many
    args = parser.parse_args(["replay-many", "in", "-o", "out", "--batch", "2", "--no-smoothing", "--topic", "/a",
                              "--gpus-per-replayer", "0.5", "--memory-per-replayer", "1.5G"])
    assert (args.batch, args.smoothing, args.topics, args.gpus_per_replayer) == (2, False, ["/a"], 0.5)
    assert args.memory_per_replayer == int(1.5 * 2**30)


def test_importing_the_tools_does_not_import_ray():
    """The node, `endoarss replay` and even the replay-many module load without Ray (it is imported on use)."""
    import subprocess

    code = ("import sys; from endoarss_ros.cli import build_parser; build_parser(); "
            "import endoarss_ros.tools.replay_many.replay_many, endoarss_ros.bag.replay; "
            "assert 'ray' not in sys.modules, 'ray was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120,
                   env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])))


def test_unreachable_cluster_no_recordings_and_missing_model_are_one_line_errors(archive, tmp_path, capsys):
    from endoarss_ros.cli import main

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = str(Path(__file__).resolve().parents[1] / "models" / "demo" / "endoarss_demo.safetensors")
    bag = str(archive / "site_a" / "case")
    cases = [([bag, "--model", demo, "--address", f"127.0.0.1:{port}"],
              f"cannot join the Ray cluster at 127.0.0.1:{port}"),
             ([str(tmp_path / "empty"), "--model", demo], "no recordings"),
             ([bag, "--model", str(tmp_path / "none.safetensors")], "none.safetensors: no such file")]
    (tmp_path / "empty").mkdir()
    for argv, message in cases:
        assert main(["replay-many", *argv, "-o", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
