#!/bin/bash
# How the files in this folder were made (2 shared CPU cores, one thread per process, run from the repo root).
# Made before issue 19 (the grid2d PGM layout, the DiT MaskGIT, partgm's earlier sampler numbers); with
# today's code those are model.image_layout=grid2d / model.network=dit: see benchmarks/images_before_after.sh.
set -e
COMMON="data.corpus=digits data.val_fraction=0.1 model.hidden_size=96 model.n_heads=4 model.cond_dim=96 model.dropout=0.0
 train.steps=1500 train.global_batch=32 train.lr=1e-3 train.warmup_steps=50 train.ema_decay=0.999 train.eval_every=500
 train.eval_batches=2 train.save_every=250 train.progress=false"
export OMP_NUM_THREADS=1
partgm train --algo maskgit --run-dir runs/digits-maskgit $COMMON model.n_blocks=4 &
partgm train --algo pgm-image --run-dir runs/digits-pgm $COMMON model.n_encoder_blocks=2 model.n_decoder_blocks=2 &
wait
OUT=benchmarks/results/images
for run in maskgit pgm; do
  for s in confidence halton; do
    partgm eval fid-digits runs/digits-$run --num-per-class 100 --steps 32 --sampler $s --out $OUT/fid-digits-$run-$s.json
  done
  partgm sample runs/digits-$run --steps 32 --num-samples 10 --batch 100 --sampler confidence --out $OUT/samples-$run-confidence
done
partgm sample runs/digits-pgm --steps 32 --num-samples 10 --batch 100 --sampler halton --out $OUT/samples-pgm-halton
for run in maskgit pgm; do
  partgm eval fid-digits runs/digits-$run --num-per-class 100 --steps 32 --sampler confidence --guidance 1 --out $OUT/fid-digits-$run-confidence-w1.json
done
partgm eval fid-digits runs/digits-pgm --num-per-class 100 --steps 32 --sampler halton --temperature 0.7 --out $OUT/fid-digits-pgm-halton-t0.7.json
partgm bench images --sizes digits --steps 32,64 --guidance 0,3 --batch 32 --warmup 0 --repeats 1 --threads 1 --out $OUT/bench-digits-cpu.json
python $OUT/side_by_side.py $OUT/samples-maskgit-confidence.png $OUT/samples-pgm-confidence.png \
  "MaskGIT (confidence, 32 steps)" "PGM (confidence, 32 steps)" $OUT/digits-maskgit-vs-pgm.png
