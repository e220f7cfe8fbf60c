#!/usr/bin/env bash
# The prepared GPU run of issue 13 (CUDA-stream overlap, torch.compile / CUDA graphs): one call
# of the workplace's device tool, results under $OUT.
#
#   make device-wheels        # here, once: the stack's pure-Python wheels into .whl/ (9 MB)
#   device run: command "bash tools/device/gpu_check.sh", carry [".whl"], timeout_s 540
#
# The GPU image has torch, timm, safetensors, scipy, pytest ... but no OpenMMLab or open_clip:
# those travel as wheels and go to /tmp/site (nothing of the image is replaced).
# Env: PYTHON (python3), DEVICE (cuda), BENCH_ARGS (extra tools/benchmark.py args, e.g. --tiny
# for a dry run on a CPU), N_IMAGES (30).  Exit: 3 no wheels / install failed, else the number
# of failed steps (0 = all ran).
set -u
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
N_IMAGES=${N_IMAGES:-30}
OUT=${OUT:-outputs/device}
mkdir -p "$OUT"
ls .whl/*.whl >/dev/null 2>&1 || { echo "gpu_check: no wheels in .whl/: run 'make device-wheels' here and carry .whl" >&2; exit 3; }
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || { echo "gpu_check: installing .whl/*.whl failed" >&2; exit 3; }
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
failed=0
step() {  # step NAME CMD...: output to $OUT/NAME.log and to stdout's tail
    local name=$1; shift
    echo "== $name: $*"
    local t0=$SECONDS
    "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$OUT/$name.log"
    echo "== $name: rc $rc, $((SECONDS - t0)) s"
    [ $rc -eq 0 ] || failed=$((failed + 1))
}
{ nvidia-smi --query-gpu=name,driver_version,memory.total,utilization.gpu --format=csv 2>&1
  "$PYTHON" -c 'import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available())'
  uptime; } > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"
# the CUDA tests (skipped on a CPU) and the equality of the rows they time
step tests "$PYTHON" -m pytest -p no:cacheprovider tests/test_overlap_encoders.py \
    tests/test_vfm_window.py tests/test_benchmark_speed.py
# fp32 and bf16 tables, ViT-B/16 CLIP + DINOv3 ViT-B/16 (random init), 336 x 448, 6 crops
step bench_fp32 timeout 280 "$PYTHON" tools/benchmark.py --side-by-side --gpu-variants \
    --device "$DEVICE" --n-images "$N_IMAGES" --warmup 3 ${BENCH_ARGS:-}
step bench_bf16 timeout 170 "$PYTHON" tools/benchmark.py --side-by-side --gpu-variants \
    --compile-modes default --autocast bf16 --device "$DEVICE" --n-images "$N_IMAGES" \
    --warmup 3 ${BENCH_ARGS:-}
echo "gpu_check: $failed step(s) failed; logs in $OUT"
exit $failed
