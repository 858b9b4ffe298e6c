#!/usr/bin/env bash
# The GPU machine's checks, one stage per call, each meant to finish well under 5 minutes on
# an H100 from a cold start (numba's JIT and NVRTC included):
#   bash bench/gpu_check.sh STAGE [STAGE ...]      STAGE: smoke | tests | sanitizer | train | all
#   smoke      versions (CuPy, NVRTC, CUDA runtime, driver, numba), the compile state of every
#              kernels/*.cu, and one small call of every GPU impl of every op against the
#              reference (the first case of each *matches_reference gpu test and impl);
#   tests      every test marked gpu, counted per test file (= per family);
#   sanitizer  compute-sanitizer memcheck and racecheck over a small subset of the gpu tests,
#              with CuPy's memory pool off so that memcheck sees every allocation;
#   train      LeNet-5 on digits with --device cuda and with --device cpu, same seed.
# Run smoke first and fix what fails before anything else. Each stage writes STAGE.log and
# STAGE.json (exit code, counts, what it measured) under $OUT, or /tmp/gpu_check when OUT is
# not set, and prints a one-line summary. The exit code is that of the last failing stage.
set -u
cd "$(dirname "$0")/.." || exit 1
out=${OUT:-/tmp/gpu_check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
export PYTHONPATH="bench${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
# Each stage's own limit (seconds), so that one stage never eats a whole device session.
STAGE_TIMEOUT=${GPU_CHECK_TIMEOUT:-280}
# The sanitizer subset: small float32 shapes of the CUDA C kernels that use shared memory,
# warp shuffles or index tricks.
SANITIZER_TESTS=(tests/test_conv.py tests/test_pool.py tests/test_loss.py tests/test_norm.py
                 tests/test_activation.py)
SANITIZER_FILTER="matches_reference and float32 and not numba"
status=0

summary() {  # STAGE RC [KEY=VALUE ...]: writes STAGE.json from STAGE.log and STAGE.xml
    local stage=$1 rc=$2
    shift 2
    "$PY" bench/gpu_check.py summary "$stage" "$rc" "$out/$stage.log" "$out/$stage.xml" \
        "$out/$stage.json" "$@"
    echo "== $stage: exit $rc; $(grep -E '(passed|failed|error)' "$out/$stage.log" | tail -n 1)"
    [ "$rc" = 0 ] || status=$rc
}

stage_smoke() {
    {
        "$PY" -m gpuconv info
        "$PY" -c 'import importlib.metadata as m; print("numba", m.version("numba"),
            "numba-cuda", m.version("numba-cuda"))'
        GPUCONV_SMOKE=1 timeout "$STAGE_TIMEOUT" "$PY" -m pytest -p gpu_check -m gpu \
            -k matches_reference -q -p no:cacheprovider --junitxml="$out/smoke.xml" tests
    } >"$out/smoke.log" 2>&1
    local rc=$?
    summary smoke "$rc" "gpu=$(grep -m1 '^GPU:' "$out/smoke.log")" \
        "cuda_c=$(grep -m1 '^CUDA C sources' "$out/smoke.log")" \
        "numba=$(grep -m1 '^numba ' "$out/smoke.log")" \
        "impls=$(grep -m1 '^smoke: ' "$out/smoke.log")"
}

stage_tests() {
    timeout "$STAGE_TIMEOUT" "$PY" -m pytest -m gpu -q -p no:cacheprovider \
        --junitxml="$out/tests.xml" tests >"$out/tests.log" 2>&1
    summary tests $?
}

stage_sanitizer() {
    if ! command -v compute-sanitizer >/dev/null 2>&1; then
        echo "compute-sanitizer is not installed" >"$out/sanitizer.log"
        summary sanitizer "not installed"
        return
    fi
    local tool rc results=()
    : >"$out/sanitizer.log"
    for tool in memcheck racecheck; do
        GPUCONV_NO_MEMORY_POOL=1 timeout $((STAGE_TIMEOUT / 2)) compute-sanitizer \
            --tool "$tool" --error-exitcode 99 --target-processes all \
            "$PY" -m pytest -p gpu_check -m gpu -q -p no:cacheprovider -x \
            -k "$SANITIZER_FILTER" "${SANITIZER_TESTS[@]}" >>"$out/sanitizer.log" 2>&1
        rc=$?
        results+=("$tool=$rc")
        echo "== $tool exit $rc" >>"$out/sanitizer.log"
    done
    rc=0
    for tool in "${results[@]}"; do [ "${tool#*=}" = 0 ] || rc=${tool#*=}; done
    summary sanitizer "$rc" "${results[@]}"
}

stage_train() {
    local device acc=() seconds=() rc=0 start
    : >"$out/train.log"
    for device in cuda cpu; do
        start=$(date +%s)
        timeout $((STAGE_TIMEOUT / 2)) "$PY" -m gpuconv train lenet5 --dataset digits \
            --device "$device" --seed 0 --no-progress --out "$out/train_$device" \
            >>"$out/train.log" 2>&1 || rc=$?
        seconds+=("seconds_$device=$(($(date +%s) - start))")
        acc+=("accuracy_$device=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["test_accuracy"])' \
            "$out/train_$device/summary.json" 2>/dev/null || echo null)")
    done
    summary train "$rc" "${acc[@]}" "${seconds[@]}"
    echo "   ${acc[*]} ${seconds[*]}"
}

if [ $# -eq 0 ]; then
    sed -n '2,14p' "$0" >&2
    exit 2
fi
stages=("$@")
[ "$*" = all ] && stages=(smoke tests sanitizer train)
for stage in "${stages[@]}"; do
    case "$stage" in
        smoke) stage_smoke ;;
        tests) stage_tests ;;
        sanitizer) stage_sanitizer ;;
        train) stage_train ;;
        *) echo "unknown stage: $stage (smoke, tests, sanitizer, train or all)" >&2; exit 2 ;;
    esac
done
exit "$status"
