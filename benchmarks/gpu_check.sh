#!/usr/bin/env bash
# One command for a session that has a GPU (issue 9). Every log goes to one folder:
#
#   benchmarks/gpu_check.sh [LOG_DIR]          # default LOG_DIR: gpu_check_logs/ (git-ignored)
#   benchmarks/gpu_check.sh --rehearse [DIR]   # every step on the CPU at small sizes: checks the script only
#
# Steps, each with its own time limit; the limits add up to 7 min 55 s (not yet run on a GPU):
#   env.log                 GPU, torch, packages
#   tests.log               the tests with CUDA variants: tests/test_embed.py, test_embed_precision.py,
#                           test_search.py (CUDA fp32 = the CPU's numbers; each precision on real faces)
#   bench_embed.log/.json   iresnet100, 8,192 JPEGs, batch 256: bare forward vs pipeline at fp32, tf32,
#                           bf16, fp16; the input side stage by stage; deviation from fp32 on real faces
#   bench_search_50k.log    best_match / top_pairs vs raw matmul + max / top-k, 10k x 50k, fp32/fp16/bf16
#   bench_search_490k.log   the same at the paper's scale, 10k x 490k
#   torchrun.log            a one-process run and `torchrun --nproc-per-node N -m faceaudit embed` (N = the
#                           GPUs, at least 2) on 1,024 JPEGs: the outputs must be byte-identical
#   summary.txt             each step's command, exit code and time; the headline figures
#
# It needs only what the repository carries (PYTHONPATH, nothing installed) and torch with CUDA,
# numpy, scipy, scikit-learn, pillow, tqdm, pytest. For the real-face figures it also needs the
# onnx package, Models/face_recognition_sface_2021dec.onnx (an ignored file: carry it) and the ORL
# faces in $FACEAUDIT_SHARED_DATA/orl (default ../shared/data/orl, else ./shared/data/orl);
# without them those figures are skipped, and the logs say so.
set -u
cd "$(dirname "$0")/.."
DEVICE=cuda
EMBED_SIZE=(--arch iresnet100 --images 8192 --batch-size 256)
SEARCH_50K=(--queries 10000 --references 50000)
SEARCH_490K=(--queries 10000 --references 490000)
TESTS=(tests/test_embed.py tests/test_embed_precision.py tests/test_search.py)
SMOKE_IMAGES=1024
if [ "${1:-}" = "--rehearse" ]; then
    shift
    DEVICE=cpu
    EMBED_SIZE=(--arch mobilefacenet --images 32 --batch-size 16 --quick --baseline-images 2)
    SEARCH_50K=(--queries 500 --references 5000 --repeat 1)
    SEARCH_490K=(--queries 500 --references 9000 --repeat 1)
    TESTS+=(-k cuda)
    SMOKE_IMAGES=40
fi
LOG=${1:-gpu_check_logs}
mkdir -p "$LOG"
LOG=$(cd "$LOG" && pwd)
PY=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PIP_NO_INDEX=1  # offline: a model fetch in the tests fails at once and the test is skipped
if [ -z "${FACEAUDIT_SHARED_DATA:-}" ]; then
    for candidate in ../shared/data shared/data; do
        if [ -d "$candidate/orl" ]; then export FACEAUDIT_SHARED_DATA=$(cd "$candidate" && pwd); break; fi
    done
fi
FACES=${FACEAUDIT_SHARED_DATA:-../shared/data}/orl
SUMMARY="$LOG/summary.txt"
: > "$SUMMARY"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export PY FACES WORK DEVICE SMOKE_IMAGES

step() {  # step NAME SECONDS COMMAND...: run it with a time limit, its output in LOG/NAME.log
    local name=$1 limit=$2 start rc
    shift 2
    echo "== $name: $*" | tee -a "$SUMMARY"
    start=$(date +%s)
    timeout --kill-after=10 "$limit" bash -c '"$@"' "$name" "$@" > "$LOG/$name.log" 2>&1
    rc=$?
    echo "   exit $rc in $(( $(date +%s) - start )) s$([ $rc -eq 124 ] && echo " (time limit $limit s)")" \
        | tee -a "$SUMMARY"
}

environment() {
    nvidia-smi || true
    "$PY" - <<'EOF'
import importlib, os, platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| GPUs", torch.cuda.device_count(), [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
print("CPU cores", os.cpu_count(), "| load", os.getloadavg())
for name in ("numpy", "scipy", "sklearn", "PIL", "tqdm", "pytest", "orjson", "onnx", "onnxruntime", "torchvision"):
    try:
        print(f"{name:12s}", getattr(importlib.import_module(name), "__version__", "?"))
    except ImportError:
        print(f"{name:12s} absent")
EOF
    echo "real faces: $FACES $([ -d "$FACES" ] && echo present || echo absent)"
    ls -l Models/*.onnx 2>/dev/null || echo "no Models/*.onnx"
}

torchrun_smoke() {
    "$PY" - "$WORK" <<'EOF' || return 1
import os, sys
from pathlib import Path
import torch
sys.path.insert(0, "benchmarks")
from bench_embed import make_dataset
from faceaudit.models import create_model
work = Path(sys.argv[1])
make_dataset(work / "Dataset", int(os.environ["SMOKE_IMAGES"]))
torch.manual_seed(0)
torch.save(create_model("mobilefacenet").state_dict(), work / "m.pth")
EOF
    local n common
    n=$("$PY" -c "import torch; print(max(2, torch.cuda.device_count()))")
    [ "$DEVICE" = cpu ] && export OMP_NUM_THREADS=1  # as torchrun sets it for the ranks: the same numbers
    common=(embed "$WORK/Dataset" --arch mobilefacenet --weights "$WORK/m.pth" --device "$DEVICE"
            --batch-size 64 --no-progress)
    "$PY" -m faceaudit "${common[@]}" -o "$WORK/one.jsonl" || return 1
    "$PY" -m torch.distributed.run --standalone --nproc-per-node "$n" -m faceaudit "${common[@]}" \
        -o "$WORK/ranks.jsonl" || return 1
    if cmp "$WORK/one.jsonl" "$WORK/ranks.jsonl"; then
        echo "byte-identical: yes ($n processes vs one, $(wc -l < "$WORK/one.jsonl") lines, $DEVICE)"
    else
        echo "byte-identical: NO"
        return 1
    fi
}

export -f environment torchrun_smoke
step env 15 environment
step tests 150 "$PY" -m pytest -q -rs -p no:cacheprovider "${TESTS[@]}"
step bench_embed 130 "$PY" benchmarks/bench_embed.py --device "$DEVICE" "${EMBED_SIZE[@]}" \
    --faces "$FACES" --json "$LOG/bench_embed.json"
step bench_search_50k 40 "$PY" benchmarks/bench_search.py --device "$DEVICE" "${SEARCH_50K[@]}" --loop-queries 20
step bench_search_490k 90 "$PY" benchmarks/bench_search.py --device "$DEVICE" "${SEARCH_490K[@]}" --loop-queries 0
step torchrun 50 torchrun_smoke

{
    echo
    echo "== headline figures"
    grep -hE "passed|failed|error" "$LOG/tests.log" | tail -n 2
    grep -hE "bare forward|whole pipeline|deviation|vs fp32|peak" "$LOG/bench_embed.log"
    for size in 50k 490k; do
        echo "-- search $size"
        grep -hE "^(raw|faceaudit|  the same)|faster|equal" "$LOG/bench_search_$size.log"
    done
    grep -h "byte-identical" "$LOG/torchrun.log"
} 2>&1 | tee -a "$SUMMARY"
