#!/usr/bin/env bash
# The one prepared GPU check, staged so that a failure late in the window can be rerun alone. On a fresh Linux
# x86-64 machine with Python 3.12 and a CUDA build of torch, no ROS and no internet:
#   stage 1 (<= 4 min): environment -> env.txt; install without ROS + imports with rclpy/rosbags blocked
#       -> install.log; pytest -m cuda without the compile tests -> pytest-stage1.log; the headline rows
#       (official ViT-B/14 at 224, 1920x1080 rgb8, batch 1 and 2, eager bf16, naive baseline in the same run)
#       -> bench-stage1.{json,log}
#   stage 2 (the rest): pytest -m cuda, compile tests only -> pytest-stage2.log; the rest of the matrix
#       (bf16 with compile = CUDA graphs, tensorrt, onnxruntime and eager on every model; fp16 and fp32 last)
#       -> bench-stage2-bf16.{json,log}, bench-stage2-fp.{json,log}; then the archive / temporal hook.
# Every bench row is in its JSON as soon as it is measured; each stage records its steps in steps-stageN.md;
# summary.md is rebuilt at the end of every run from whatever exists in OUT_DIR (so a stage-2 rerun keeps
# stage 1's results). A failing step is recorded and the next one still runs; the exit status is the worst step's.
#
# Usage: scripts/gpu_check.sh [--wheels DIR] [--minutes N] [--stage 1|2] [--cpu-smoke] OUT_DIR
#   --wheels DIR  pip install --no-index every wheel in DIR first (e.g. onnxruntime-gpu, torch_tensorrt)
#   --minutes N   wall-clock budget of this run (default 7.5); stage 1 gets at most 4 min of it, stage 2 the rest
#   --stage S     run only stage S (1 or 2), with the whole budget (at most 4 min for stage 1)
#   --cpu-smoke   the same steps on this machine's CPU with a tiny matrix and no installing (tests this script)
# Environment: PYTHON (default: the .venv of scripts/setup_env.sh when there is one, else python3),
# ENDOARSS_CACHE_DIR (engine cache; default a temporary folder).
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-}
if [ -z "$python" ]; then
    if [ -x "$repo/.venv/bin/python" ]; then python=$repo/.venv/bin/python; else python=python3; fi
fi
wheels="" minutes=7.5 smoke=0 out="" only=""
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) wheels=$2; shift 2 ;;
        --minutes) minutes=$2; shift 2 ;;
        --stage) only=$2; shift 2 ;;
        --cpu-smoke) smoke=1; shift ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) out=$1; shift ;;
    esac
done
[ -n "$out" ] || { echo "usage: $0 [--wheels DIR] [--minutes N] [--stage 1|2] [--cpu-smoke] OUT_DIR" >&2; exit 2; }
case "$only" in ""|1|2) ;; *) echo "--stage must be 1 or 2" >&2; exit 2 ;; esac
mkdir -p "$out" && out=$(cd "$out" && pwd)
budget=$("$python" -c "print(int(float('$minutes') * 60))")
cache=${ENDOARSS_CACHE_DIR:-$(mktemp -d /tmp/endoarss-gpu-check.XXXXXX)}
export ENDOARSS_CACHE_DIR=$cache TORCHINDUCTOR_CACHE_DIR=$cache/inductor PYTHONUNBUFFERED=1
cd "$repo"
status=0
steps_file=/dev/null

left() { echo $((budget - SECONDS)); }
step() {  # step NAME LOG TIMEOUT_S COMMAND...: run, record status and seconds in the stage's steps file
    local name=$1 log=$2 limit=$3; shift 3
    local t0=$SECONDS rc
    echo "[gpu_check] $name (limit ${limit}s)"
    if [ "$limit" -le 0 ]; then
        echo "not run: no time left" >>"$log"; rc=124
    else
        timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1; rc=$?
    fi
    echo "| $name | $([ $rc -eq 0 ] && echo ok || echo "failed (exit $rc$([ $rc -eq 124 ] && echo ', timed out'))") | $((SECONDS - t0)) s |" >>"$steps_file"
    [ $rc -gt $status ] && status=$rc
    return 0
}
bench() {  # bench NAME LIMIT_S MATRIX...: endoarss bench into bench-NAME.{json,log}, stopping new rows in time
    local name=$1 limit=$2; shift 2
    local device=cuda; [ $smoke -eq 1 ] && device=cpu
    rm -f "$out/bench-$name.json" "$out/bench-$name.log"
    step "endoarss bench ($name)" "$out/bench-$name.log" "$limit" "$python" -m endoarss_ros.cli bench "$@" \
        --device $device --time-budget $(( limit > 60 ? limit - 45 : limit / 2 )) --no-ros --cache-dir "$cache" \
        --json "$out/bench-$name.json"
}
cuda_tests() {  # cuda_tests NAME LIMIT_S -k EXPR: pytest -m cuda into pytest-NAME.log
    local name=$1 limit=$2; shift 2
    rm -f "$out/pytest-$name.log"
    step "pytest -m cuda $*" "$out/pytest-$name.log" "$limit" \
        "$python" -m pytest -m cuda test/test_inference_cuda.py -v -rs --durations=0 -p no:cacheprovider "$@"
}
if [ $smoke -eq 1 ]; then  # the same steps, tiny
    headline=(--models endoarss-tiny --backends eager --precisions fp32 --sizes 320x240 --batches 1,2 --frames 3
              --warmup 1 --baseline-frames 1)
    rest=(--models endoarss-tiny --sizes 320x240 --batches 1 --frames 3 --warmup 1 --baseline-frames 1)
    rest_bf16=(--backends compile,tensorrt,onnxruntime --precisions bf16)
    rest_fp=(--backends onnxruntime --precisions fp16,fp32)
else
    headline=(--models official --backends eager --precisions bf16 --sizes 1920x1080 --batches 1,2 --frames 50
              --warmup 10 --baseline-frames 10)
    rest=(--models official,endoarss-base,endoarss-tiny --sizes 1920x1080,1280x1024 --batches 1,2 --frames 50
          --warmup 10 --baseline-frames 10)
    rest_bf16=(--backends compile,tensorrt,onnxruntime,eager --precisions bf16)
    rest_fp=(--backends eager,compile,tensorrt,onnxruntime --precisions fp16,fp32)
fi

setup() {  # environment, install without ROS, imports with ROS blocked (every run: a rerun starts fresh)
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
    step "import without ROS (rclpy, rosbags blocked)" "$out/install.log" 120 "$python" - <<'EOF'
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("rclpy", "rosbags", "rosidl_runtime_py", "sensor_msgs"):
            raise ImportError(f"{name} is blocked: the GPU check runs without ROS")

sys.meta_path.insert(0, Block())
import endoarss_ros.inference, endoarss_ros.tools.bench.bench, endoarss_ros.model, endoarss_ros.model.deploy  # noqa
from endoarss_ros.cli import build_parser, main
build_parser("bench").parse_args(["bench", "--quick"])
print("imported without ROS:", endoarss_ros.inference.__file__)
EOF
}
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"  # works whether or not the editable install did

stage1() {
    local end=$(( SECONDS + ($(left) < 240 ? $(left) : 240) ))
    steps_file=$out/steps-stage1.md; : >"$steps_file"
    setup
    cuda_tests stage1 $(( (end - SECONDS) * 2 / 5 )) -k "not compile"
    bench stage1 $(( end - SECONDS - 5 )) "${headline[@]}"
}
stage2() {
    steps_file=$out/steps-stage2.md; : >"$steps_file"
    [ "$only" = 2 ] && setup
    cuda_tests stage2 $(( $(left) * 2 / 5 )) -k compile
    bench stage2-bf16 $(( ($(left) - 20) * 3 / 5 )) "${rest[@]}" "${rest_bf16[@]}"
    bench stage2-fp $(( $(left) - 20 )) "${rest[@]}" "${rest_fp[@]}"
    hooks
}
hooks() {  # the short archive run (replay-many on Ray) and the temporal step cost, within the time left
    : >"$out/hooks.md"
    local device=cuda; [ $smoke -eq 1 ] && device=cpu
    if [ $smoke -eq 1 ]; then
        echo "* archive run: not run in the CPU smoke run (test/test_replay_many_ray.py covers replay-many)" >>"$out/hooks.md"
    elif "$python" -c "import ray" >/dev/null 2>&1; then
        local size=1080x1920 seconds=4
        step "endoarss replay-many (2 recordings, replayers per GPU)" "$out/archive.log" $(( $(left) - 40 )) \
            "$python" scripts/bench_replay_many.py --configs 1x4x1,2x4x0.5 --device $device --size $size \
            --recordings 2 --seconds $seconds --fps 30 --json "$out/replay_many.json"
        echo "* archive run: $out/replay_many.json (see archive.log)" >>"$out/hooks.md"
    else
        echo "* archive run (endoarss replay-many): not run, ray is not installed (bring its cp312 wheels with --wheels)" >>"$out/hooks.md"
    fi
    step "endoarss bench (temporal step cost)" "$out/bench-temporal.log" $(( $(left) - 5 )) "$python" -m endoarss_ros.cli \
        bench --models endoarss-tiny --backends eager --precisions fp32 --sizes 320x240 --batches 1 --frames 2 \
        --warmup 1 --baseline-frames 1 --device $device --no-ros --temporal-ticks 1000 --cache-dir "$cache" \
        --json "$out/bench-temporal.json"
    echo "* temporal step cost: \`temporal\` in $out/bench-temporal.json" >>"$out/hooks.md"
}

summary() {  # rebuilt from whatever exists in OUT_DIR
    {
        echo "# GPU check $(date -u +%Y-%m-%d) ($([ $smoke -eq 1 ] && echo 'CPU smoke run' || head -1 "$out/env.txt" 2>/dev/null))"
        echo; echo '```'; cat "$out/env.txt" 2>/dev/null; echo '```'; echo
        echo "| step | status | time |"; echo "|---|---|---|"
        for s in 1 2; do
            if [ -s "$out/steps-stage$s.md" ]; then cat "$out/steps-stage$s.md"; else echo "| stage $s | not run | - |"; fi
        done
        for s in 1 2; do
            [ -f "$out/pytest-stage$s.log" ] && echo && echo "pytest stage $s: $(grep -E '^(=+ )?[0-9]+ (passed|failed|skipped|error|deselected)' "$out/pytest-stage$s.log" | tail -1)"
        done
        echo; echo "## endoarss bench"; echo
        "$python" - "$out" <<'EOF'
import json, sys
from pathlib import Path
from endoarss_ros.tools.bench.bench_report import markdown_table
rows, unavailable, skipped = [], [], []
for path in sorted(Path(sys.argv[1]).glob("bench-*.json")):
    try:
        d = json.loads(path.read_text())
    except ValueError:  # cut mid-write: the previous row's file is gone too; say so
        print(f"({path.name} unreadable)\n")
        continue
    rows += d["results"]; unavailable += d["unavailable"]; skipped += d["skipped"]
print(markdown_table(rows, unavailable, skipped) if rows or unavailable or skipped else "no bench rows")
EOF
        echo; echo "## Archive run and temporal step cost"; echo
        cat "$out/hooks.md" 2>/dev/null || echo "* not reached (stage 2 not run)"
    } >"$out/summary.md" 2>>"$out/summary.log"
}

[ "$only" != 2 ] && stage1
[ "$only" != 1 ] && stage2
summary
echo "[gpu_check] done in ${SECONDS} s (exit $status): $out/summary.md"
exit $status
