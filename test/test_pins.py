"""The pinned pytest is one that Jazzy's launch_testing pytest plugin loads with (README: testing on a ROS 2
install): the plugin's ``pytest_pycollect_makemodule(path, parent)`` needs the ``path`` hook argument, which
pytest 9 removed, and with launch_testing installed next to this package every pytest 9 run fails at collection."""
from __future__ import annotations

import inspect
import re
import sys
from importlib.metadata import version
from pathlib import Path

from test.conftest import REPO


def _pin(file: str, name: str) -> str:
    text = (REPO / "requirements" / file).read_text()
    found = re.findall(rf"^{re.escape(name)}==(\S+)$", text, flags=re.MULTILINE)
    assert len(found) == 1, f"{name} is pinned {len(found)} times in requirements/{file}"
    return found[0]


def test_pytest_is_pinned_once_to_the_version_installed():
    pin = _pin("python.txt", "pytest")
    assert pin == _pin("constraints.txt", "pytest")
    if Path(sys.prefix).resolve() == (REPO / ".venv").resolve():  # what scripts/setup_env.sh installed
        assert version("pytest") == pin


def test_the_installed_pytest_still_offers_the_hook_argument_launch_testing_uses():
    import _pytest.hookspec

    assert "path" in inspect.signature(_pytest.hookspec.pytest_pycollect_makemodule).parameters
