#!/usr/bin/env bash
# `make reproduce-toy`: the VEEGAN and PacGAN Table 1 rows on the ring and the grid, and every
# remedy of ganlab in the VEEGAN-row setup against the same-setup GAN, over 5 seeds each; then
# `ganlab report` over all of it, and docs/results/toy.md (ours next to the papers', with wall time).
#
# Knobs (environment): SEEDS (default 0,1,2,3,4), STEPS (2000: what 2 CPU cores allow, see toy.md),
# JOBS (parallel jobs through the joblib launcher, default 2), OUT (the output directory).
set -euo pipefail
cd "$(dirname "$0")/.."

SEEDS=${SEEDS:-0,1,2,3,4}
STEPS=${STEPS:-2000}
JOBS=${JOBS:-2}
OUT=${OUT:-outputs/reproduce_toy/$(date +%Y-%m-%d_%H-%M-%S)}
DOC=${DOC:-docs/results/toy.md}
GANLAB=${GANLAB:-.venv/bin/ganlab}
EVERY=$(( STEPS / 4 > 0 ? STEPS / 4 : 1 ))
# W1/W2 and pictures inline (no worker process per job: the joblib jobs already fill the cores).
COMMON=(seed="$SEEDS" steps="$STEPS" eval.every="$EVERY" eval.background=false
        hydra/launcher=joblib hydra.launcher.n_jobs="$JOBS")

sweep() {  # sweep NAME OVERRIDES...: one multirun into $OUT/NAME; failed or diverged jobs do not stop the rest
  local name=$1; shift
  echo "== $name: $*"
  "$GANLAB" train -m "$@" "${COMMON[@]}" hydra.sweep.dir="$OUT/$name" \
    || echo "== $name: some jobs failed or diverged (exit $?); the report counts them"
}

start=$(date +%s)
sweep veegan experiment=veegan_ring_gan,veegan_ring_unrolled,veegan_grid_gan,veegan_grid_unrolled
sweep pacgan experiment=pacgan_ring_gan,pacgan_ring_pac2,pacgan_ring_pac3,pacgan_ring_pac4,pacgan_grid_gan,pacgan_grid_pac2,pacgan_grid_pac3,pacgan_grid_pac4
# The same setup as the VEEGAN GAN rows (which are its remedy=none baseline: same config, same group).
sweep remedies experiment=veegan_setup dataset=ring,grid \
  remedy=unrolled_surrogate,pacgan,minibatch_disc,minibatch_std,feature_matching,label_smoothing,spectral_norm,instance_noise
wall=$(( $(date +%s) - start ))

"$GANLAB" report "$OUT"
.venv/bin/python scripts/toy_results.py "$OUT" --wall-seconds "$wall" --steps "$STEPS" --seeds "$SEEDS" --jobs "$JOBS" \
  --out "$DOC"
echo "wrote $DOC (runs in $OUT, $wall s)"
