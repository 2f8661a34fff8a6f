#!/usr/bin/env bash
# `make reproduce-toy`: the VEEGAN and PacGAN Table 1 rows on the ring and the grid, and every
# remedy of ganlab in the VEEGAN-row setup against the same-setup GAN, over 5 seeds each; then
# `ganlab report` over all of it, and docs/results/toy.md (ours next to the papers', with wall time).
#
#   scripts/reproduce_toy.sh [veegan] [pacgan] [remedies] [remedies2]   # the parts to run; default: all
#
# Each part is one multirun into $OUT/PART. A finished part leaves $OUT/PART/.complete (its wall
# time in seconds and step count) and is skipped when the script runs again with the same OUT, so
# an interrupted reproduction continues with the parts that are missing.
#
# Knobs (environment): SEEDS (default 0,1,2,3,4); STEPS, the steps of the veegan and remedies runs
# (default 1000) and PACGAN_STEPS, of the pacgan runs (default 2000: PacGAN's lr 1e-4 needs more
# steps to place its samples) - what 2 CPU cores allow, see toy.md; JOBS (parallel jobs through the
# joblib launcher, default 2); OUT (the output directory); DOC (default docs/results/toy.md).
set -euo pipefail
cd "$(dirname "$0")/.."

SEEDS=${SEEDS:-0,1,2,3,4}
STEPS=${STEPS:-1000}
PACGAN_STEPS=${PACGAN_STEPS:-2000}
JOBS=${JOBS:-2}
OUT=${OUT:-outputs/reproduce_toy/$(date +%Y-%m-%d_%H-%M-%S)}
DOC=${DOC:-docs/results/toy.md}
GANLAB=${GANLAB:-.venv/bin/ganlab}
PARTS=("$@")
[ ${#PARTS[@]} -eq 0 ] && PARTS=(veegan pacgan remedies remedies2)

part() {  # part NAME STEPS OVERRIDES...: one multirun into $OUT/NAME, skipped when already complete
  local name=$1 steps=$2; shift 2
  if [ -f "$OUT/$name/.complete" ]; then echo "== $name: already complete in $OUT/$name"; return; fi
  echo "== $name ($steps steps): $*"
  local start; start=$(date +%s)
  # W1/W2 and pictures inline (no worker process per job: the joblib jobs already fill the cores).
  # Failed or diverged jobs do not stop the rest: the report counts them.
  "$GANLAB" train -m "$@" seed="$SEEDS" steps="$steps" eval.every=$(( steps / 4 > 0 ? steps / 4 : 1 )) \
    eval.background=false hydra/launcher=joblib hydra.launcher.n_jobs="$JOBS" hydra.sweep.dir="$OUT/$name" \
    || echo "== $name: some jobs failed or diverged (exit $?); the report counts them"
  echo "$(( $(date +%s) - start )) $steps $JOBS" > "$OUT/$name/.complete"
}

for name in "${PARTS[@]}"; do
  case $name in
    veegan) part veegan "$STEPS" experiment=veegan_ring_gan,veegan_ring_unrolled,veegan_grid_gan,veegan_grid_unrolled ;;
    pacgan) part pacgan "$PACGAN_STEPS" experiment=pacgan_ring_gan,pacgan_ring_pac2,pacgan_ring_pac3,pacgan_ring_pac4,pacgan_grid_gan,pacgan_grid_pac2,pacgan_grid_pac3,pacgan_grid_pac4 ;;
    # The same setup as the VEEGAN GAN rows, which are its remedy=none baseline (same config, one group).
    remedies) part remedies "$STEPS" experiment=veegan_setup dataset=ring,grid \
        remedy=unrolled_surrogate,pacgan,minibatch_disc,minibatch_std,feature_matching,label_smoothing,spectral_norm,instance_noise ;;
    # The remedies that add networks or change sampling (MAD-GAN, MRGAN, VEEGAN, ...), same setup, and
    # the baseline again (the metrics added since, and a check that its training did not change).
    remedies2) part remedies2 "$STEPS" experiment=veegan_setup dataset=ring,grid \
        remedy=none,madgan,mrgan,veegan,ortho_jacobian,drs,ebgan ;;
    *) echo "unknown part '$name': choose from veegan, pacgan, remedies, remedies2" >&2; exit 2 ;;
  esac
done

"$GANLAB" report "$OUT"
.venv/bin/python scripts/toy_results.py "$OUT" --seeds "$SEEDS" --out "$DOC"
echo "wrote $DOC (runs in $OUT)"
