#!/usr/bin/env bash
# One GPU-machine session of the memory-policy benchmarks, from the repository root (or from a
# folder holding copies of gct_stream_ros/, benchmarks/ and test/):
#
#   bash benchmarks/policies_gpu.sh
#
# Stages (STAGES to pick and order them; all by default):
#   tests    the CUDA tests of the budgeted caches (bf16 attention mass, no synchronisation in a step);
#   step     cache step per policy at budgets 1, 0.5, 0.25 and the sliding window at the same tokens;
#   memory   CUDA memory allocated / reserved at frames 200 .. 2000, each policy in its own process
#            (MEMORY_POLICIES, MEMORY_FRAMES);
#   budgets  layer budgets of the model on the smooth panning input;
#   fidelity the model compiled and replayed from CUDA graphs (as the node), on FIDELITY_FRAMES (320)
#            frames: the sliding window, then shrunk to each budget's tokens, then each policy at
#            budgets 1, 0.5, 0.25, each in its own process (policy_fidelity.py).
# budgets and fidelity need WEIGHTS_PY (the shared filler); .gpucache/ is restored as for
# gpu_session.sh. Results land in $OUT (the device tool's folder) or ./out, logs only unless
# SAVE_JSON=1. TOTAL (s) bounds the whole session.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
source benchmarks/gpu_caches.sh
OUT=${OUT:-out}
mkdir -p "$OUT"
W=${WEIGHTS_PY:-.shared/parity/weights.py}
DEADLINE=$((SECONDS + ${TOTAL:-280}))  # every stage stops by then (device time is counted)
within() { local left=$((DEADLINE - SECONDS)); echo $(( $1 < left ? $1 : (left > 1 ? left : 1) )); }
FULL="--layers 24 --heads 16 --patches 972 --window 64 --max-frames 1024 --device cuda --dtype bfloat16"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"

stage_tests() {
    timeout "$(within "${TEST_TIMEOUT:-45}")" python3 -m pytest -q -p no:cacheprovider test/gpu/test_cache_policies_gpu.py \
        2>&1 | tail -15 | tee "$OUT/gpu_tests.log"
}

stage_step() {
    timeout "$(within "${STEP_TIMEOUT:-110}")" python3 benchmarks/cache_step.py $FULL \
        --policies sliding_window,evict3r,infinitevggt --budgets 1,0.5,0.25 --same-tokens --frames "${STEP_FRAMES:-140}" \
        ${SAVE_JSON:+--json "$OUT/cache_step.json"} 2>&1 | tee "$OUT/cache_step.log"
}

stage_memory() {
    for policy in ${MEMORY_POLICIES:-evict3r infinitevggt sliding_window}; do
        timeout "$(within "${MEMORY_TIMEOUT:-80}")" python3 benchmarks/cache_step.py $FULL --policies "$policy" \
            --budgets 1 --frames "${MEMORY_FRAMES:-2000}" --memory-at 200,500,1000,1500,2000 \
            ${SAVE_JSON:+--json "$OUT/memory_$policy.json"} 2>&1 | tee "$OUT/memory_$policy.log"
    done
}

stage_budgets() {
    [ -f "$W" ] && timeout "$(within "${BUDGETS_TIMEOUT:-90}")" python3 benchmarks/layer_budgets.py --weights-py "$W" \
        --budget 0.5 --frames 60 ${SAVE_JSON:+--json "$OUT/layer_budgets.json"} 2>&1 | tee "$OUT/layer_budgets.log"
}

stage_fidelity() {
    # the window (the yardstick, then shrunk to each budget's tokens), then each policy, each in a
    # process of its own
    [ -f "$W" ] || return 1
    for policy in "" evict3r infinitevggt; do
        timeout "$(within "${FIDELITY_TIMEOUT:-600}")" python3 benchmarks/policy_fidelity.py --weights-py "$W" \
            --reference /tmp/sliding_window.pt --policies "$policy" $([ -z "$policy" ] && echo --same-tokens) \
            --frames "${FIDELITY_FRAMES:-320}" --compile --graphs ${SAVE_JSON:+--json "$OUT/fidelity_${policy:-window}.json"} \
            2>&1 | tee "$OUT/fidelity_${policy:-window}.log"
    done
}

for stage in ${STAGES:-tests step memory budgets fidelity}; do
    echo "=== stage $stage $(date -u +%T)"
    "stage_$stage"
done
echo "=== done $(date -u +%T)"
