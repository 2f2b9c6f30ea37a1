"""The console scripts are installed and every subcommand is wired to a tool that builds its parser and runs."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from endoarss_ros.cli import SUBCOMMANDS
from test.conftest import REPO


def _script(name: str) -> str:
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"console script {name} is not installed (run scripts/setup_env.sh)")
    return found


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=120)


def test_every_subcommand_builds_its_parser_from_its_tool_module():
    """`endoarss NAME --help` imports tools/NAME and builds its arguments: a broken import or a tool without
    add_arguments/run fails here, one subcommand at a time (the top-level help imports none of them)."""
    top = _run(_script("endoarss"), "--help")
    assert top.returncode == 0, top.stderr
    for name, (module, help_text) in SUBCOMMANDS.items():
        assert module.startswith("endoarss_ros.tools."), (name, module)
        assert help_text in " ".join(top.stdout.split()), name
        sub = _run(_script("endoarss"), name, "--help")
        assert sub.returncode == 0 and sub.stdout.startswith(f"usage: endoarss {name}"), (name, sub.stderr)


def test_no_subcommand_and_unknown_subcommand_exit_2():
    assert _run(_script("endoarss")).returncode == 2
    unknown = _run(_script("endoarss"), "frobnicate")
    assert unknown.returncode == 2 and "invalid choice: 'frobnicate'" in unknown.stderr


def test_info_runs_through_the_console_script_on_the_demo_weights():
    out = _run(_script("endoarss"), "info", str(REPO / "models" / "demo" / "endoarss_demo.safetensors"))
    assert out.returncode == 0, out.stderr
    assert "activity classes (3): 0=Marking, 1=Circumferential Incision, 2=Submucosal Dissection" in out.stdout
    params = [line.split() for line in out.stdout.splitlines() if line.startswith("parameters: total")]
    assert len(params) == 1 and int(params[0][2].replace(",", "")) > 1_000_000


def test_perception_node_script_refuses_a_missing_model_with_one_line():
    """The node's console script starts rclpy, configures, and fails configure with a clear line (exit 1)."""
    out = _run(_script("endoarss-perception"), "--ros-args", "-p", "model:=/nonexistent/w.safetensors",
               "-p", "device:=cpu")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "/nonexistent/w.safetensors" in out.stdout + out.stderr
