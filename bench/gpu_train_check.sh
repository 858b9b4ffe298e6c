#!/usr/bin/env bash
# Training without host waits (issue 12) on the GPU machine, in one run:
#   source .device/env.sh && bash bench/gpu_train_check.sh
# 1. the gpu tests of the training path: no synchronisation in a step (cupyx.allow_synchronize),
#    eager and CUDA-graph runs equal bit for bit, the multi-tensor optimizer and clipping,
#    the device-side checks, the pinned-memory loader, the numba launch path, the training
#    bench's five epochs of each mode;
# 2. `gpuconv bench train`: five epochs of LeNet-5 on 60,000 random 28x28 images (the median
#    epoch reported), gpuconv and torch, each eager and with a captured graph; JSON and
#    Markdown written to $OUT.
# Logs go to $OUT (the device tool's folder) or /tmp/gpu_train_check.
set -u
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu_train_check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_train.py tests/test_graphs.py \
    tests/test_device_checks.py tests/test_optim_gpu.py tests/test_data.py \
    tests/test_numba_cuda.py \
    tests/test_benchmark.py::test_train_rows_on_the_gpu_time_every_epoch_of_eager_and_graph_modes \
    2>&1 | tee "$out/train_tests.log"
tests_rc=${PIPESTATUS[0]}
python3 -m gpuconv bench train --json "$out/results_train_gpu.json" \
    --markdown "$out/results_train_gpu.md" 2>&1 | tee "$out/bench_train.log"
bench_rc=${PIPESTATUS[0]}
echo
echo "== gpu_train_check summary =="
echo "training gpu tests: exit $tests_rc; $(grep -E 'passed|failed|error' "$out/train_tests.log" | tail -n 1)"
echo "bench train:        exit $bench_rc"
grep -E "gpuconv_|torch_" "$out/bench_train.log"
[ "$tests_rc" = 0 ] && [ "$bench_rc" = 0 ]
