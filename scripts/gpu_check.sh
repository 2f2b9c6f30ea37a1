#!/usr/bin/env bash
# The one prepared GPU check: on a fresh Linux x86-64 machine with Python 3.12 and a CUDA build of torch,
# no ROS and no internet, in under 8 minutes:
#   1. the environment (GPU, driver, python, torch, packages)                      -> OUT_DIR/env.txt
#   2. the package installed without ROS (pip --no-deps, else PYTHONPATH), and the
#      model / inference / bench code imported with rclpy and rosbags blocked       -> OUT_DIR/install.log
#   3. pytest -m cuda (test/test_inference_cuda.py)                                  -> OUT_DIR/pytest.log
#   4. endoarss bench over the GPU matrix, within the time left                      -> OUT_DIR/bench.{json,md,log}
#   5. a summary: each step's status and time, then the bench table                  -> OUT_DIR/summary.md
# A failing step is recorded and the next one still runs; the exit status is that of the worst step.
#
# Usage: scripts/gpu_check.sh [--wheels DIR] [--minutes N] [--cpu-smoke] OUT_DIR
#   --wheels DIR  pip install --no-index every wheel in DIR first (e.g. onnxruntime-gpu, torch_tensorrt)
#   --minutes N   total wall-clock budget (default 7.8); the bench gets what the earlier steps leave
#   --cpu-smoke   the same steps on this machine's CPU with a tiny matrix and no installing (tests this script)
# Environment: PYTHON (default: the .venv of scripts/setup_env.sh when there is one, else python3),
# ENDOARSS_CACHE_DIR (engine cache; default a temporary folder).
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-}
if [ -z "$python" ]; then
    if [ -x "$repo/.venv/bin/python" ]; then python=$repo/.venv/bin/python; else python=python3; fi
fi
wheels="" minutes=7.8 smoke=0 out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) wheels=$2; shift 2 ;;
        --minutes) minutes=$2; shift 2 ;;
        --cpu-smoke) smoke=1; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) out=$1; shift ;;
    esac
done
[ -n "$out" ] || { echo "usage: $0 [--wheels DIR] [--minutes N] [--cpu-smoke] OUT_DIR" >&2; exit 2; }
mkdir -p "$out" && out=$(cd "$out" && pwd)
budget=$("$python" -c "print(int(float('$minutes') * 60))")
cache=${ENDOARSS_CACHE_DIR:-$(mktemp -d /tmp/endoarss-gpu-check.XXXXXX)}
export ENDOARSS_CACHE_DIR=$cache TORCHINDUCTOR_CACHE_DIR=$cache/inductor PYTHONUNBUFFERED=1
cd "$repo"
status=0
steps=()

left() { echo $((budget - SECONDS)); }
step() {  # step NAME LOG TIMEOUT_S COMMAND...: run, record status and seconds
    local name=$1 log=$2 limit=$3; shift 3
    local t0=$SECONDS rc
    echo "[gpu_check] $name (limit ${limit}s)"
    if [ "$limit" -le 0 ]; then
        echo "not run: no time left" >>"$log"; rc=124
    else
        timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1; rc=$?
    fi
    steps+=("| $name | $([ $rc -eq 0 ] && echo ok || echo "failed (exit $rc$([ $rc -eq 124 ] && echo ', timed out'))") | $((SECONDS - t0)) s |")
    [ $rc -gt $status ] && status=$rc
    return 0
}

# 1. environment ---------------------------------------------------------------------------------------
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"; echo "host: $(uname -a)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs) ($(nproc) cores); load: $(cut -d' ' -f1-3 /proc/loadavg)"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,pcie.link.gen.current,pcie.link.width.current --format=csv
    "$python" - <<'EOF'
import importlib, platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| available", torch.cuda.is_available(), "|", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
for m in ("numpy", "cv2", "safetensors", "yaml", "onnx", "onnxruntime", "torch_tensorrt", "tensorrt", "rclpy", "rosbags"):
    try:
        mod = importlib.import_module(m)
        extra = f" providers={mod.get_available_providers()}" if m == "onnxruntime" else ""
        print(f"{m}: {getattr(mod, '__version__', '?')}{extra}")
    except Exception as e:
        print(f"{m}: not importable ({type(e).__name__})")
EOF
} >"$out/env.txt" 2>&1

# 2. install without ROS ---------------------------------------------------------------------------------
: >"$out/install.log"
if [ -n "$wheels" ]; then
    step "extra wheels ($wheels)" "$out/install.log" 120 \
        "$python" -m pip install -q --no-index --no-deps --no-cache-dir "$wheels"/*.whl
fi
if [ $smoke -eq 0 ]; then
    # no internet: no build isolation (setuptools comes with the image), no dependency resolution
    step "pip install --no-deps -e ." "$out/install.log" 120 \
        "$python" -m pip install -q --no-deps --no-build-isolation --no-index -e "$repo"
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"  # works whether or not the editable install did
step "import without ROS (rclpy, rosbags blocked)" "$out/install.log" 120 "$python" - <<'EOF'
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("rclpy", "rosbags", "rosidl_runtime_py", "sensor_msgs"):
            raise ImportError(f"{name} is blocked: the GPU check runs without ROS")

sys.meta_path.insert(0, Block())
import endoarss_ros.inference, endoarss_ros.tools.bench, endoarss_ros.model, endoarss_ros.model.deploy  # noqa
from endoarss_ros.cli import build_parser, main
build_parser("bench").parse_args(["bench", "--quick"])
print("imported without ROS:", endoarss_ros.inference.__file__)
EOF

# 3. the cuda tests ---------------------------------------------------------------------------------------
pytest_limit=$(( $(left) * 2 / 5 ))
step "pytest -m cuda" "$out/pytest.log" "$pytest_limit" \
    "$python" -m pytest -m cuda test/test_inference_cuda.py -v -rs --durations=0 -p no:cacheprovider

# 4. the bench matrix ---------------------------------------------------------------------------------------
if [ $smoke -eq 1 ]; then
    matrix=(--models endoarss-tiny --backends eager,onnxruntime --precisions fp32,bf16 --sizes 320x240
            --batches 1,2 --frames 3 --warmup 1 --baseline-frames 1 --device cpu)
else
    matrix=(--models official,endoarss-base,endoarss-tiny --backends eager,compile,tensorrt,onnxruntime
            --precisions bf16,fp16,fp32 --sizes 1920x1080,1280x1024 --batches 1,2 --frames 50 --warmup 10
            --baseline-frames 10 --device cuda)
fi
hard=$(( $(left) - 20 ))
step "endoarss bench" "$out/bench.log" "$hard" "$python" -m endoarss_ros.cli bench "${matrix[@]}" \
    --time-budget $(( hard > 90 ? hard - 75 : hard / 2 )) --no-ros --cache-dir "$cache" \
    --json "$out/bench.json" --markdown "$out/bench.md"
if [ ! -s "$out/bench.md" ] && [ -s "$out/bench.json" ]; then  # killed: the JSON holds every finished row
    "$python" -c "
import json, sys
from endoarss_ros.tools.bench import markdown_table
d = json.load(open(sys.argv[1]))
print(markdown_table(d['results'], d['unavailable'], d['skipped']))" "$out/bench.json" >"$out/bench.md" 2>>"$out/bench.log"
fi

# 5. summary ------------------------------------------------------------------------------------------------
{
    echo "# GPU check $(date -u +%Y-%m-%d) ($([ $smoke -eq 1 ] && echo 'CPU smoke run' || head -1 "$out/env.txt"))"
    echo; echo '```'; cat "$out/env.txt"; echo '```'; echo
    echo "| step | status | time |"; echo "|---|---|---|"; printf '%s\n' "${steps[@]}"
    echo; echo "pytest: $(grep -E '^(=+ )?[0-9]+ (passed|failed|skipped|error)' "$out/pytest.log" | tail -1)"
    echo; echo "## endoarss bench"; echo; cat "$out/bench.md" 2>/dev/null || echo "no bench table (see bench.log)"
} >"$out/summary.md"
echo "[gpu_check] done in ${SECONDS} s (exit $status): $out/summary.md"
exit $status
