#!/usr/bin/env bash
# `make reproduce-stacked`: Stacked Fashion-MNIST (1,000 modes, offline here), a DCGAN baseline and
# the pacgan and unrolled remedies in experiment=stacked_setup, over seeds; then `ganlab report`
# and docs/results/stacked.md (modes and KL as mean ± s.e., wall time).
#
#   scripts/reproduce_stacked.sh
#
# One evaluation per run, at the end (26,000 samples: about 1.5 min on one CPU core).
# Knobs (environment): SEEDS (0,1,2), STEPS (2000), REMEDIES (none,pacgan,unrolled,multiscale), CONDITIONAL
# (acgan,cgan_projection: trained with dataset.classes=first, a triple's first digit as its class, 10
# classes of 100 modes each, so that collapse within a class shows in the modes; empty: none), JOBS (2
# joblib jobs), DATASET (stacked_fashion_mnist; stacked_mnist needs the MNIST files), OUT (default
# $HOME/ganlab-runs/reproduce_stacked: outside the checkout), DOC. A finished sweep leaves
# $OUT/.complete with its wall time and is not re-run; an interrupted one continues when the script
# runs again with the same OUT (resume=auto: completed runs are skipped, interrupted ones resume from
# their checkpoints). Every run also measures its reference rows before its first step (the untrained
# G, and a second real sample through the same classifier): two more evaluations per run.
set -euo pipefail
cd "$(dirname "$0")/.."

SEEDS=${SEEDS:-0,1,2}
STEPS=${STEPS:-2000}
REMEDIES=${REMEDIES:-none,pacgan,unrolled,multiscale}
CONDITIONAL=${CONDITIONAL-acgan,cgan_projection}
JOBS=${JOBS:-2}
DATASET=${DATASET:-stacked_fashion_mnist}
OUT=${OUT:-$HOME/ganlab-runs/reproduce_stacked}
DOC=${DOC:-docs/results/stacked.md}
GANLAB=${GANLAB:-.venv/bin/ganlab}
BASE=${DATASET#stacked_}

mkdir -p "$OUT"
# The mode classifier labels every channel; it is trained once and cached.
"$GANLAB" classifier dataset="$BASE"

# .complete holds "wall-seconds steps jobs remedies [classes=first]", one line per sweep; a later call with
# more REMEDIES or CONDITIONAL trains only the new rows (resume=auto skips the completed runs).
sweep() {  # sweep REMEDIES TAG [overrides...]: the runs of those remedies not yet in .complete, then its line
  local remedies=$1 tag=$2
  shift 2
  local done_remedies missing start
  done_remedies=""
  if [ -f "$OUT/.complete" ]; then
    done_remedies=$(awk -v tag="$tag" \
      '(tag == "" && NF == 4) || (tag != "" && $5 == tag) {print $4} tag == "" && NF < 4 {print "none,pacgan,unrolled"}' \
      "$OUT/.complete" | tr '\n' ',')
  fi
  missing=$(tr ',' '\n' <<< "$remedies" | while read -r r; do [[ ",$done_remedies," == *",$r,"* ]] || echo "$r"; done)
  if [ -z "$missing" ]; then
    echo "== $remedies${tag:+ ($tag)}: already complete in $OUT"
    return
  fi
  start=$(date +%s)
  # Pictures inline (the joblib jobs already fill the cores); failed or diverged jobs do not stop the rest.
  local status=0
  "$GANLAB" train -m experiment=stacked_setup dataset="$DATASET" remedy="$remedies" seed="$SEEDS" steps="$STEPS" \
    eval.every="$STEPS" eval.background=false cpu_threads=1 resume=auto "$@" \
    hydra/launcher=joblib hydra.launcher.n_jobs="$JOBS" || status=$?
  if [ "$status" = 2 ] || [ "$status" -ge 128 ]; then  # refused (a config error) or interrupted: nothing to record
    echo "== the sweep of $remedies stopped (exit $status); run the script again to continue" >&2
    exit "$status"
  fi
  [ "$status" = 0 ] || echo "== some jobs failed or diverged (exit $status); the report counts them"
  echo "$(( $(date +%s) - start )) $STEPS $JOBS $remedies${tag:+ $tag}" >> "$OUT/.complete"
}

sweep "$REMEDIES" "" hydra.sweep.dir="$OUT"
# The conditional rows label a triple by its first digit: a sweep of their own, in $OUT/conditional
# (the report and stacked_results read every run under $OUT).
[ -z "$CONDITIONAL" ] || sweep "$CONDITIONAL" classes=first dataset.classes=first hydra.sweep.dir="$OUT/conditional"

"$GANLAB" report "$OUT" --metrics modes_captured,reverse_kl,modes_corrected,reverse_kl_corrected,domain_fid,kid,precision,recall,coverage,swd
.venv/bin/python scripts/stacked_results.py "$OUT" --out "$DOC"
echo "wrote $DOC (runs in $OUT)"
