#!/bin/bash
# Digits, before / after issue 19: partgm's earlier image models and samplers vs the authors'.
#   bash benchmarks/images_before_after.sh OUT    (from the repo root; 31 min on 2 cores)
#   STEPS=2 N=1 bash benchmarks/images_before_after.sh /tmp/smoke    (a smoke run; PARTGM= the command)
# Trains 4 runs (the digits recipe of benchmarks/results/images/reproduce.sh, 1,500 steps each, two at a
# time): MaskGIT reference network / DiT, PGM authors' layout / grid2d; then FID-digits + class accuracy
# for confidence and halton with the authors' sampler numbers ("after") and partgm's earlier ones
# ("before": --schedule partgm --temp-warmup 0 --guidance-schedule constant; the earlier Halton sampler
# also sharpened its first step, which no flag reproduces), at guidance 0 and 1; and one grid per run.
set -e
OUT=${1:?usage: $0 OUT}
PARTGM=${PARTGM:-partgm}
mkdir -p "$OUT"
COMMON="data.corpus=digits data.val_fraction=0.1 model.hidden_size=96 model.n_heads=4 model.cond_dim=96 model.dropout=0.0
 train.steps=${STEPS:-1500} train.global_batch=32 train.lr=1e-3 train.warmup_steps=50 train.ema_decay=0.999 train.eval_every=500
 train.eval_batches=2 train.save_every=250 train.progress=false data.cache_dir=$OUT/cache"
export OMP_NUM_THREADS=1
$PARTGM train --algo maskgit --run-dir "$OUT/maskgit-after" $COMMON model.n_blocks=4 &
$PARTGM train --algo maskgit --run-dir "$OUT/maskgit-before" $COMMON model.n_blocks=4 model.network=dit &
wait
$PARTGM train --algo pgm-image --run-dir "$OUT/pgm-after" $COMMON model.n_encoder_blocks=2 model.n_decoder_blocks=2 &
$PARTGM train --algo pgm-image --run-dir "$OUT/pgm-before" $COMMON model.n_encoder_blocks=2 model.n_decoder_blocks=2 \
  model.image_layout=grid2d &
wait
BEFORE="--schedule partgm --temp-warmup 0 --guidance-schedule constant"
for run in maskgit-after maskgit-before pgm-after pgm-before; do
  for s in confidence halton; do
    for w in 0 1; do
      $PARTGM eval fid-digits "$OUT/$run" --num-per-class ${N:-100} --steps 32 --sampler $s --guidance $w \
        --out "$OUT/fid-$run-$s-w$w-authors.json"
      $PARTGM eval fid-digits "$OUT/$run" --num-per-class ${N:-100} --steps 32 --sampler $s --guidance $w $BEFORE \
        --out "$OUT/fid-$run-$s-w$w-partgm.json"
    done
  done
  $PARTGM sample "$OUT/$run" --steps 32 --num-samples 10 --batch 100 --out "$OUT/samples-$run"
done
$PARTGM bench images --sizes digits --steps 32,64 --guidance 0,3 --batch 32 --warmup 0 --repeats 1 --threads 1 \
  --out "$OUT/bench-digits-cpu.json"
python "$(dirname "$0")/images_summary.py" "$OUT"    # the before / after table -> OUT/summary.md
