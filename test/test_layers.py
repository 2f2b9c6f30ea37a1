"""The package's layers, read from the source: no import runs from a lower layer to a higher one.

Data flows msg -> inference -> model -> inference -> msg. The library (model .. inference) knows nothing of its
callers; ``bag/`` (files) and ``ros/`` (the node) are siblings that wrap the pipeline; ``tools/`` (one module per
``endoarss`` subcommand) sits above both, and ``cli`` only maps subcommand names to tools.
Every ``import`` / ``from ... import`` (at module level
or inside a function) and every ``importlib.import_module("endoarss_ros...")`` with a literal name counts.
"""
from __future__ import annotations

import ast
from pathlib import Path

from test.conftest import REPO

PACKAGE = REPO / "endoarss_ros"
# Higher numbers may import lower ones; the same number may not import each other.
RANK = {
    "__init__": -1, "lazy": -1, "files": -1,  # the package root and its two helpers: below everything
    "model": 0,
    "data": 1, "metrics": 1,
    "inference": 2, "training": 2,
    "bag": 3, "ros": 3,
    "tools": 4,
    "cli": 5,
}
ROS_ONLY = ("rclpy", "endoarss_ros.msg", "diagnostic_msgs", "sensor_msgs", "std_msgs", "rcl_interfaces",
            "builtin_interfaces", "lifecycle_msgs", "std_srvs")
ROS_LAYERS = ("ros", "tools")  # the node, and the entry points that talk to it
BAG_LAYERS = ("bag", "tools")  # rosbags: files, and the entry points that play them


def _layer(path: Path, package: Path) -> str:
    rel = path.relative_to(package)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path`` (a file under ``root``, the import root)."""
    package = list(path.relative_to(root).parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                found.append((node.lineno, ".".join(base + ([node.module] if node.module else []))))
            else:
                found.append((node.lineno, node.module))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            found.append((node.lineno, node.args[0].value))
    return found


def _violations(package: Path = PACKAGE) -> list[str]:
    out = []
    root = package.parent
    for path in sorted(package.rglob("*.py")):
        layer = _layer(path, package)
        assert layer in RANK, f"{path}: layer {layer!r} has no rank in test_layers.RANK"
        where = path.relative_to(root)
        for line, module in _imports(path, root):
            top = module.split(".")[0]
            if module.startswith("endoarss_ros."):
                target = module.split(".")[1]
                if target == "msg":
                    if layer not in ROS_LAYERS:
                        out.append(f"{where}:{line}: imports the generated messages ({module}) outside ros/, tools/")
                elif target != layer and RANK.get(target, -1) >= RANK[layer]:
                    out.append(f"{where}:{line}: {layer} (rank {RANK[layer]}) imports {module} "
                               f"(rank {RANK.get(target)})")
            elif any(module == p or module.startswith(p + ".") for p in ROS_ONLY) and layer not in ROS_LAYERS:
                out.append(f"{where}:{line}: imports {module} outside ros/, tools/")
            elif top == "rosbags" and layer not in BAG_LAYERS:
                out.append(f"{where}:{line}: imports {module} outside bag/, tools/")
    return out


def test_no_import_runs_against_the_layers():
    assert _violations() == []


def test_the_checker_sees_function_level_and_by_name_imports(tmp_path):
    """The parser finds the kinds of imports that hid layer breaks before (inside functions, by name)."""
    package = tmp_path / "endoarss_ros"
    (package / "inference").mkdir(parents=True)
    (package / "inference" / "probe.py").write_text(
        "from ..model import config\n"  # allowed: down a layer
        "def f():\n    from ..ros import qos\n"
        "def g():\n    import importlib\n    importlib.import_module('endoarss_ros.bag.replay')\n"
        "def h():\n    import rclpy\n")
    (package / "ros").mkdir()
    (package / "ros" / "node.py").write_text("from endoarss_ros.bag import reader\nimport rosbags\n")  # siblings
    (package / "tools").mkdir()
    (package / "tools" / "play.py").write_text("import rclpy\nimport rosbags\nfrom endoarss_ros.bag import reader\n")
    found = _violations(package)
    assert len(found) == 5, found
    assert sum("inference/probe.py" in v for v in found) == 3 and sum("ros/node.py" in v for v in found) == 2, found
