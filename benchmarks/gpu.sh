#!/usr/bin/env bash
# Every GPU check and the paper's speed protocol in one prepared run: under 9 minutes on one H200.
#
#   bash benchmarks/gpu.sh            # on a machine with a GPU, from the repository root
#   SMOKE=1 bash benchmarks/gpu.sh    # dry run of the same parts with tiny sizes (any machine, CPU too)
#
# Parts (each under its own timeout; a failing or timed-out part is recorded and the next one runs):
#   env          GPU / torch / CUDA versions
#   checks       tests/engine/test_cuda_paths.py + tests/models/test_attention_layouts.py: compiled FlexAttention training
#                layout vs dense mask (logits and gradients), padded likewise, packed sampler CUDA vs CPU,
#                bf16 vs fp32, inductor-compiled packed forward vs eager with bounded recompiles, cached
#                r=1 == uniform, no host sync in the training step (FakeTensor)
#   sample-6-6   batch 32, L 1024, 32 and 128 steps, bf16 autocast: PGM 6/6 d1024 uniform vs MDLM reference
#                and best: ONE invocation, one run_id, with FLOPs and the matmul peak
#   sample-8-8   PGM 8/8 vs MDLM best, 128 steps (its own run_id), and the adaptive threshold sampler
#                (tau 0.9, approximate) of both at its 128-call cap: the cost of querying every remaining position
#   train        training tokens/s, batch 32, L 1024: PGM 6/6 d768 (flex and dense layouts) vs MDLM small
#   compile      PGM 6/6 d1024 uniform vs uniform-compile (torch.compile, clean widths bucketed by 256), 32
#                steps: last, because compiling may not fit the time left (then it is recorded as a timeout)
# Writes benchmarks/results/gpu-<stamp>-*.json (+ .png, .log) and gpu-<stamp>-status.json (every part's
# exit code and seconds). Exit code 0 if every part passed, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
SMOKE=${SMOKE:-0}
OUT=${OUT:-benchmarks/results}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
PREFIX="$OUT/gpu-$STAMP"
if [ "$SMOKE" = 1 ]; then PREFIX="$OUT/gpu-smoke-$STAMP"; fi
mkdir -p "$OUT"
PY=${PYTHON:-python}
STATUS=()
FAILED=0

part() {  # part NAME SECONDS COMMAND...: run with a timeout, log to PREFIX-NAME.log, never abort the script
  local name=$1 limit=$2 rc=0 start end
  shift 2
  start=$(date +%s)
  echo "== $name (limit ${limit}s): $*"
  timeout --signal=TERM --kill-after=15 "$limit" "$@" >"$PREFIX-$name.log" 2>&1 || rc=$?
  end=$(date +%s)
  local why="ok"
  if [ "$rc" != 0 ]; then FAILED=1; why="failed"; fi
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then why="timeout"; fi
  echo "   $why (rc $rc, $((end - start)) s); tail of $PREFIX-$name.log:"
  tail -n 3 "$PREFIX-$name.log" | sed 's/^/   | /' || true
  STATUS+=("{\"part\": \"$name\", \"rc\": $rc, \"result\": \"$why\", \"seconds\": $((end - start)), \"log\": \"$PREFIX-$name.log\"}")
}

if [ "$SMOKE" = 1 ]; then  # CPU-compatible: no inductor compile (minutes on CPU), no flex backward (CUDA only)
  SIZE=(--smoke)
  STEPS=(--steps 4,8)
  STEPS_8_8=4
  COMPILE_STEPS=4
  TRAIN_SIZE=(--smoke)
  TRAIN_ALGOS=pgm/padded,pgm/dense,mdlm
  COMPILE_VARIANTS=pgm/uniform  # inductor on a CPU takes minutes per graph: not in the dry run
  LIMITS=(30 300 300 200 200 200)
else
  SIZE=(--batch 32 --length 1024 --warmup 1 --repeats 2 --no-overhead)
  STEPS=(--steps 32,128)
  STEPS_8_8=128
  COMPILE_STEPS=32
  TRAIN_SIZE=(--batch 32 --length 1024 --warmup 2 --repeats 5)
  TRAIN_ALGOS=pgm/flex,pgm/dense,mdlm
  COMPILE_VARIANTS=pgm/uniform,pgm/uniform-compile
  LIMITS=(15 90 180 75 90 80)  # 530 s in all: under 9 minutes
fi

part env "${LIMITS[0]}" "$PY" -c "
import torch, platform
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'python', platform.python_version())
print('devices', [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] or 'no CUDA')
"
part checks "${LIMITS[1]}" "$PY" -m pytest -q -p no:cacheprovider tests/engine/test_cuda_paths.py \
  tests/models/test_attention_layouts.py
part sample-6-6 "${LIMITS[2]}" "$PY" -m partgm.cli bench sample "${SIZE[@]}" "${STEPS[@]}" \
  --pgm-preset pgm-6-6-d1024 --variants pgm/uniform,mdlm/reference,mdlm/best \
  --out "$PREFIX-sample-6-6.json"
part sample-8-8 "${LIMITS[3]}" "$PY" -m partgm.cli bench sample "${SIZE[@]}" --steps "$STEPS_8_8" \
  --pgm-preset pgm-8-8 --variants pgm/uniform,mdlm/best,pgm/threshold,mdlm/threshold --out "$PREFIX-sample-8-8.json"
part train "${LIMITS[4]}" "$PY" -m partgm.cli bench train "${TRAIN_SIZE[@]}" --algos "$TRAIN_ALGOS" \
  --out "$PREFIX-train.json"
part compile "${LIMITS[5]}" "$PY" -m partgm.cli bench sample "${SIZE[@]}" --steps "$COMPILE_STEPS" \
  --pgm-preset pgm-6-6-d1024 --variants "$COMPILE_VARIANTS" --out "$PREFIX-compile.json"

{
  echo "["
  for i in "${!STATUS[@]}"; do
    sep=","
    [ "$i" = $((${#STATUS[@]} - 1)) ] && sep=""
    echo "  ${STATUS[$i]}$sep"
  done
  echo "]"
} >"$PREFIX-status.json"
echo "wrote $PREFIX-status.json"
exit "$FAILED"
