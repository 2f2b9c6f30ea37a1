"""scripts/setup_env.sh is idempotent: a second run with nothing changed rebuilds and reinstalls nothing."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv"


@pytest.mark.skipif(Path(sys.prefix).resolve() != VENV.resolve(), reason="the tests do not run in the repo's .venv")
def test_second_setup_run_is_a_no_op():
    site = Path(subprocess.run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    watched = [site / "endoarss_ros" / "msg" / "_activity.py", site / "torch" / "__init__.py",
               VENV / "pip.conf", next(site.glob("__editable__*endoarss_ros*.pth"))]
    before = {p: p.stat().st_mtime_ns for p in watched}
    env = {k: v for k, v in os.environ.items() if k != "_ROS_WHEELS_BOOTSTRAP_COMPLETE"}
    t0 = time.monotonic()
    out = subprocess.run(["bash", str(REPO / "scripts" / "setup_env.sh")], capture_output=True, text=True,
                         env=env, check=True).stdout
    elapsed = time.monotonic() - t0
    assert "dependencies: up to date" in out
    assert "interfaces: up to date" in out
    assert "package: up to date" in out
    assert "installing" not in out and "building" not in out
    assert {p: p.stat().st_mtime_ns for p in watched} == before
    print(f"second setup run took {elapsed:.1f} s")
