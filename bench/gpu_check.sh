#!/usr/bin/env bash
# The GPU machine's whole check, in one run (see ../shared/device/README.md):
#   source .device/env.sh && bash bench/gpu_check.sh
# 1. every `gpu`-marked test (each GPU impl against the CPU reference, outputs NaN-poisoned);
# 2. compute-sanitizer memcheck and racecheck over a small subset of those tests;
# 3. LeNet-5 on digits trained with --device cuda and with --device cpu, same seed;
# 4. gpuconv info (the GPU, versions, and whether each kernels/*.cu compiles there);
# then a short summary, last. Logs go to $OUT (the device tool's folder) or /tmp/gpu_check.
set -u
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu_check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
# The sanitizer subset: small shapes of the kernels that use shared memory or index tricks.
SANITIZER_TESTS=(tests/test_conv.py tests/test_pool.py tests/test_loss.py tests/test_norm.py)
SANITIZER_FILTER="matches_reference and float32"

last_line() { grep -E "passed|failed|error" "$1" | tail -n 1; }

python3 -m pytest -m gpu -q -p no:cacheprovider 2>&1 | tee "$out/gpu_tests.log"
tests_rc=${PIPESTATUS[0]}

sanitize() {
    local tool=$1
    compute-sanitizer --tool "$tool" --error-exitcode 99 --target-processes all \
        python3 -m pytest -m gpu -q -p no:cacheprovider -x "${SANITIZER_TESTS[@]}" \
        -k "$SANITIZER_FILTER" >"$out/sanitizer_$tool.log" 2>&1
    echo $?
}
if command -v compute-sanitizer >/dev/null 2>&1; then
    memcheck_rc=$(sanitize memcheck)
    racecheck_rc=$(sanitize racecheck)
else
    memcheck_rc="not installed"
    racecheck_rc="not installed"
fi

train() {
    python3 -m gpuconv train lenet5 --dataset digits --device "$1" --seed 0 --no-progress \
        --out "$out/train_$1" >"$out/train_$1.log" 2>&1
    python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['test_accuracy'])" \
        "$out/train_$1/summary.json" 2>/dev/null || echo "failed (see train_$1.log)"
}
acc_cuda=$(train cuda)
acc_cpu=$(train cpu)
python3 -m gpuconv info >"$out/info.log" 2>&1

echo
echo "== gpu_check summary ($(python3 -c 'import cupy; print(cupy.cuda.runtime.getDeviceProperties(0)["name"].decode())' 2>/dev/null)) =="
echo "gpu tests:         exit $tests_rc; $(last_line "$out/gpu_tests.log")"
echo "memcheck:          exit $memcheck_rc; $(last_line "$out/sanitizer_memcheck.log" 2>/dev/null)"
echo "racecheck:         exit $racecheck_rc; $(last_line "$out/sanitizer_racecheck.log" 2>/dev/null)"
echo "lenet5 on digits:  test accuracy $acc_cuda on cuda, $acc_cpu on cpu"
echo "$(grep -E '^(GPU|CUDA C)' "$out/info.log")"
[ "$tests_rc" = 0 ] && [ "$memcheck_rc" = 0 ] && [ "$racecheck_rc" = 0 ]
