#!/usr/bin/env bash
# One GPU-machine session of the benchmarks, run from the repository root:
#
#   bash benchmarks/gpu_session.sh STAGE [STAGE ...]
#
# Needs, next to the tree (ignored paths carried along): .whl/ (flashinfer-python 0.6.8 and
# its three dependency wheels), .ref/ (a directory holding the reference's lingbot_map/ and
# gct_profile.py), .shared/parity/weights.py (the shared deterministic filler), optionally
# .gpucache/ (JIT caches from an earlier session: FlashInfer kernels, Inductor artefacts).
# Results land in $OUT (the device tool's folder) or ./out.
#
# Stages: env, refprofile (the reference's own profiler), refeager (our harness, reference
# only, eager), ours (our model, VARIANTS="backend:level,...", REF=1 adds the reference compiled
# side by side), parity (gpu_parity.py: PARTS=model,cache,memory,compiled), attention (one
# global layer per kernel), sidebyside (ours + the reference + parity, issue 12's one command),
# savecache (JIT caches for the next session, in parts of 15 MiB), offline (gct_stream_offline over
# FRAMES real photographs, compiled, the reference's settings: see benchmarks/README.md, "End to end";
# needs .whl_offline/ (ROS 2 and rosbags wheels for Python 3.12, benchmarks/offline_wheels.txt) and
# .photos/vtest.avi (benchmarks/photo_sequence.py fetch), not .whl). Environment knobs: FRAMES, VARIANTS,
# REF, PROFILE_FRAMES, PARTS, EXTRA (more arguments), *_TIMEOUT, WEIGHTS_PY, OFFLINE_PARAMS (more -p
# assignments), OFFLINE_PRESET (lingbot-map; tiny for a CPU check), OFFLINE_WHEELS (.whl_offline).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-out}
mkdir -p "$OUT"
W=${WEIGHTS_PY:-.shared/parity/weights.py}
FRAMES=${FRAMES:-320}

# the offline stage alone can run without .whl (the contiguous cache needs no FlashInfer)
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD
source benchmarks/gpu_caches.sh

stage_env() {
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
    python3 - <<'EOF'
import torch, flashinfer
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0),
      torch.cuda.get_device_properties(0).multi_processor_count, "SMs")
print("flashinfer", flashinfer.__version__)
EOF
}

stage_refprofile() {
    # the reference's own profiler, unchanged: compiled, FlashInfer FA2, bf16
    (cd .ref && timeout "${REF_TIMEOUT:-420}" python3 gct_profile.py --backend flashinfer --dtype bf16 \
        --num_frames "$FRAMES") 2>&1 | grep -v "Streaming inference" | tee "$OUT/refprofile.log"
    cp /tmp/profile_results_*.json "$OUT/" 2>/dev/null || true
}

stage_refeager() {
    timeout "${REF_TIMEOUT:-300}" python3 benchmarks/model_step.py --weights-py $W --reference .ref \
        --reference-only --reference-backend "${REF_BACKENDS:-flashinfer}" --reference-compile 0 \
        --frames "$FRAMES" --json "$OUT/refeager.json" 2>&1 | tee "$OUT/refeager.log"
}

stage_ours() {
    timeout "${OURS_TIMEOUT:-540}" python3 benchmarks/model_step.py --weights-py $W \
        --variants "${VARIANTS:-dense:none,flashinfer:none}" \
        ${REF:+--reference .ref --reference-backend flashinfer --reference-compile "$REF"} \
        --frames "$FRAMES" --profile-frames "${PROFILE_FRAMES:-0}" ${EXTRA:-} \
        --json "$OUT/ours.json" 2>&1 | tee "$OUT/ours.log"
}

stage_parity() {
    timeout "${PARITY_TIMEOUT:-540}" python3 benchmarks/gpu_parity.py --weights-py $W --reference .ref \
        --parts "${PARTS:-model,cache,memory}" ${EXTRA:-} --json "$OUT/parity.json" 2>&1 \
        | tee "$OUT/parity.log"
}

stage_savecache() {
    tar -czf - /tmp/fiws 2>/dev/null | split -b 15M - "$OUT/flashinfer_cache.tgz.part-"
    tar -cf - /tmp/inductor 2>/dev/null | xz -T0 -6 | split -b 15M - "$OUT/inductor_cache.txz.part-"
    ls -la "$OUT"
}

stage_sidebyside() {
    # issue 12's table: ours as the node runs it on CUDA (contiguous cache, compiled, steps replayed
    # from CUDA graphs, fp16 depth and camera heads: the node's defaults; SIDE_VARIANTS to time more,
    # e.g. adding contiguous:compiled+graphs, the fp32 heads) and the reference compiled, in one
    # process, 320 frames; then GPU parity of ours with fp32 and with fp16 heads vs the reference
    # (bf16 and fp32), compiled regions (PARITY_LEVEL to change)
    FRAMES=320 VARIANTS=${SIDE_VARIANTS:-contiguous:compiled+graphs+fp16head+fp16camera} REF=1 PROFILE_FRAMES=3 \
        OURS_TIMEOUT=${OURS_TIMEOUT:-330} EXTRA="" stage_ours
    PARTS=model PARITY_TIMEOUT=${PARITY_TIMEOUT:-240} EXTRA="--fp32-floor --model-backend contiguous \
        --model-level ${PARITY_LEVEL:-compiled+graphs} --half-heads --model-frames 80" stage_parity
}

stage_offline() {
    # the user's command over a folder of photographs: the ROS wheels go into a prefix of their own
    # (their libraries and ament index under it), the photographs and a checkpoint of the filler
    # weights are made here, then gct_stream_offline runs with the node's parameters
    local prefix=/tmp/rosenv
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --ignore-installed \
        --prefix "$prefix" "${OFFLINE_WHEELS:-.whl_offline}"/*.whl || return 1
    local site
    site=$(echo "$prefix"/lib/python3*/site-packages)
    local libs
    libs=$(printf '%s:' "$site"/ros_*.libs)
    echo "--- $(date -u +%T) wheels installed"
    python3 benchmarks/photo_sequence.py render .photos/vtest.avi /tmp/photos --frames "$FRAMES" || return 1
    python3 benchmarks/filler_checkpoint.py --weights-py "$W" --preset "${OFFLINE_PRESET:-lingbot-map}" \
        /tmp/filler.safetensors || return 1
    echo "--- $(date -u +%T) gct_stream_offline starts (the per-frame lines go to offline_stats.jsonl)"
    PYTHONPATH="$site:$PYTHONPATH" LD_LIBRARY_PATH="$libs$prefix/lib:${LD_LIBRARY_PATH:-}" \
        AMENT_PREFIX_PATH="$prefix" _ROS_WHEELS_BOOTSTRAP_COMPLETE=1 \
        timeout -s INT -k 30 "${OFFLINE_TIMEOUT:-540}" python3 -m gct_stream_ros.tools.offline /tmp/photos \
        -o /tmp/offline --overwrite --quiet --start-time 1700000000 --fps 30 --stats "$OUT/offline_stats.jsonl" \
        --params-file benchmarks/offline_h200.yaml -p model.checkpoint:=/tmp/filler.safetensors \
        -p model.preset:="${OFFLINE_PRESET:-lingbot-map}" \
        ${OFFLINE_PARAMS:-} 2>&1 | tee "$OUT/offline.log"
    du -sh /tmp/offline/bag | tee -a "$OUT/offline.log"
}

stage_attention() {
    # one steady-state global layer, kernel by kernel (which attention to build on)
    python3 benchmarks/attention_layer.py --json "$OUT/attention_layer.json" 2>&1 | tee "$OUT/attention_layer.log"
}

for stage in "$@"; do
    echo "=== stage $stage $(date -u +%T)"
    "stage_$stage"
done
echo "=== done $(date -u +%T)"
