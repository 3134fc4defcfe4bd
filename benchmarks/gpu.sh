#!/usr/bin/env bash
# Every GPU check of the speed work in one call, in under 8 minutes, with a summary at the end.
#
#   bash benchmarks/gpu.sh [RESULTS_DIR]        # default: $OUT if set, else ./gpu-results
#
# Run it from the repository root on a machine with one CUDA GPU; it needs no internet. Environment:
#   PYTHON            the interpreter (default: python)
#   WRN_GPU_BUDGET    seconds for the whole script (default 470); each check gets its own limit, cut to what
#                     is left, and a check that runs out is reported as TIMEOUT, never left running
#   WRN_GPU_AUTOTUNE  1 also times torch.compile mode max-autotune (minutes of autotuning: off by default)
#   WRN_GPU_DRYRUN    1 runs the same checks on the CPU with tiny models and data, to try the script itself
#                     (its figures mean nothing; fp16 fails there, as it needs CUDA)
#
# The checks, most important first:
#   sync        pytest -q tests/test_train_sync.py (no host sync per training step on CUDA)
#   bench-tests pytest -q tests/test_bench.py (on CUDA it includes the bench's own no-sync test)
#   bench       wrn bench train --model wrn-28-10 --batch-size 128 --baseline (defaults: bf16, channels_last)
#   figure4     wrn bench figure4 --device cuda (writes figure4.json and figure4.png)
#   train2      2 epochs of wrn train, WRN-28-10 on random CIFAR-10-format files (--no-verify); the 200-epoch
#               training time is extrapolated from the second epoch
#   fp16        1 epoch of wrn train, WRN-16-4, --amp fp16 (GradScaler)
#   bf16        1 epoch of wrn train, WRN-16-4, --amp bf16
#   compile     wrn bench train --model wrn-28-10 --compile (mode default)
#   compile-ro  wrn bench train --model wrn-28-10 --compile --compile-mode reduce-overhead (CUDA graphs)
#   compile-at  the same with max-autotune (only with WRN_GPU_AUTOTUNE=1)
# Every check writes RESULTS_DIR/<check>.log (and .json where it has figures); summary.txt holds the summary.

set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
RES=${1:-${OUT:-gpu-results}}
mkdir -p "$RES"
RES=$(cd "$RES" && pwd)
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-${TMPDIR:-/tmp}/wrn-inductor-cache}
DATA=${TMPDIR:-/tmp}/wrn-gpu-cifar10
BUDGET=${WRN_GPU_BUDGET:-470}
# Sizes of the real checks, and the tiny ones of a dry run on the CPU.
DEVICE=cuda BIG=wrn-28-10 SMALL=wrn-16-4 BATCH=128 F4BATCH=32 STEPS=30 WARM=10 NTRAIN=50000 NTEST=10000 F4MODELS=
if [[ "${WRN_GPU_DRYRUN:-0}" == 1 ]]; then
    DEVICE=cpu BIG=wrn-16-1 SMALL=wrn-16-1 BATCH=32 F4BATCH=2 STEPS=2 WARM=1 NTRAIN=256 NTEST=64
    F4MODELS=preact-resnet-164,wrn-40-4
fi
START=$(date +%s)
STATUS="$RES/status.txt"
: >"$STATUS"

# check NAME LIMIT_S COMMAND...: run COMMAND with its output in RES/NAME.log; record PASS/FAIL/TIMEOUT/SKIP.
check() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - ($(date +%s) - START)))
    if ((left < 20)); then
        echo "$name SKIP 0 (the ${BUDGET}s budget is spent)" | tee -a "$STATUS"
        return
    fi
    ((limit > left)) && limit=$left
    echo "== $name (limit ${limit}s): $*"
    local t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >"$RES/$name.log" 2>&1
    local rc=$? took=$(($(date +%s) - t0)) verdict=PASS
    ((rc == 124 || rc == 137)) && verdict=TIMEOUT
    ((rc != 0 && rc != 124 && rc != 137)) && verdict=FAIL
    echo "$name $verdict $took (exit $rc)" | tee -a "$STATUS"
    tail -n 4 "$RES/$name.log" | sed 's/^/    /'
}

wrn() { "$PY" -m wrn "$@"; }

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || true
    "$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'torchvision', torchvision.__version__, 'gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
    echo "cpu cores: $(nproc --all)"
} >"$RES/machine.txt" 2>&1
cat "$RES/machine.txt"
if [[ $DEVICE == cuda ]] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no CUDA GPU is visible to $PY: nothing to measure" | tee -a "$STATUS"
    exit 1
fi

if [[ -f tests/test_train_sync.py ]]; then
    check sync 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_train_sync.py
else
    echo "sync SKIP 0 (tests/test_train_sync.py is not in this tree)" | tee -a "$STATUS"
fi
check bench-tests 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_bench.py

BENCH=(--model "$BIG" --batch-size "$BATCH" --device "$DEVICE" --steps "$STEPS" --warmup "$WARM")
check bench 150 wrn bench train "${BENCH[@]}" --baseline --json "$RES/bench.json"
check figure4 120 wrn bench figure4 --device "$DEVICE" --batch-size "$F4BATCH" --steps "$STEPS" --warmup "$WARM" \
    ${F4MODELS:+--models "$F4MODELS"} --out "$RES"

check data 60 "$PY" benchmarks/fake_cifar10.py "$DATA" --train "$NTRAIN" --test "$NTEST"
rm -rf "$RES/run-28-10" "$RES/run-fp16" "$RES/run-bf16"
TRAIN=(--dataset cifar10 --data-dir "$DATA" --no-verify --device "$DEVICE" --batch-size "$BATCH" --no-progress)
check train2 180 wrn train --model "$BIG" "${TRAIN[@]}" --epochs 2 --out "$RES/run-28-10"
check fp16 90 wrn train --model "$SMALL" "${TRAIN[@]}" --epochs 1 --amp fp16 --out "$RES/run-fp16"
check bf16 90 wrn train --model "$SMALL" "${TRAIN[@]}" --epochs 1 --amp bf16 --out "$RES/run-bf16"

check compile 180 wrn bench train "${BENCH[@]}" --compile --json "$RES/compile.json"
check compile-ro 180 wrn bench train "${BENCH[@]}" --compile --compile-mode reduce-overhead --json "$RES/compile-ro.json"
if [[ "${WRN_GPU_AUTOTUNE:-0}" == 1 ]]; then
    check compile-at 300 wrn bench train "${BENCH[@]}" --compile --compile-mode max-autotune \
        --json "$RES/compile-at.json"
fi

# Large files: the metrics, config and logs are what the summary needs.
rm -f "$RES"/run-*/checkpoint.pt "$RES"/run-*/model.safetensors
"$PY" benchmarks/gpu_summary.py "$RES" | tee "$RES/summary.txt"
echo "total: $(($(date +%s) - START)) s; results in $RES"
