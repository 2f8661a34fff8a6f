#!/usr/bin/env bash
# `make reproduce-stacked`: Stacked Fashion-MNIST (1,000 modes, offline here), a DCGAN baseline and
# the pacgan, unrolled and multiscale remedies in experiment=stacked_setup, over seeds, with their
# controls (below); then `ganlab report` and docs/results/stacked.md (modes and KL as mean ± s.e.,
# wall time).
#
#   scripts/reproduce_stacked.sh
#
# One evaluation per run, at the end (26,000 samples: about 1.5 min on one CPU core).
# Knobs (environment): SEEDS (0,1,2,3,4: with 3 seeds a side the exact permutation test cannot go below
# p = 2/20 = 0.1, so nothing could be significant; 5 against 5 reaches 2/252), STEPS (2000), REMEDIES (none,pacgan,unrolled,multiscale), CONDITIONAL
# (acgan,cgan_projection: trained with dataset.classes=first, a triple's first digit as its class, 10
# classes of 100 modes each, so that collapse within a class shows in the modes; empty: none), CONTROLS
# (capacity,unrolled_k0; empty: none), MULTISCALE_D_WIDTH (5), SINGLE_D_WIDTH (14), JOBS (2 joblib
# jobs), DATASET (stacked_fashion_mnist; stacked_mnist needs the MNIST files), OUT (default
# $HOME/ganlab-runs/reproduce_stacked: outside the checkout), DOC.
# Controls (issue 25), each a sweep of its own in $OUT/controls/<name>:
# - capacity: multiscale trains 3 Ds against the baseline's one, so its row confounds multiple scales
#   with D capacity. Two rows of equal trainable D parameters separate them: multiscale with three Ds
#   of width MULTISCALE_D_WIDTH (about the one D's parameters), and remedy=none with one D of width
#   SINGLE_D_WIDTH (about multiscale's three Ds' parameters).
# - unrolled_k0: remedy=unrolled with k=0, the same G objective (g_objective=value: the saturating
#   minimax value, real term included) without unrolling, so the unrolled row's gain over it is the
#   unrolling's, not the objective's.
# A finished sweep leaves $OUT/.complete with its wall time and is not re-run; an interrupted one
# continues when the script runs again with the same OUT (resume=auto: completed runs are skipped,
# interrupted ones resume from their checkpoints). Every run also measures its reference rows before
# its first step (the untrained G, and a second real sample through the same classifier): two more
# evaluations per run.
set -euo pipefail
cd "$(dirname "$0")/.."

SEEDS=${SEEDS:-0,1,2,3,4}
STEPS=${STEPS:-2000}
REMEDIES=${REMEDIES:-none,pacgan,unrolled,multiscale}
CONDITIONAL=${CONDITIONAL-acgan,cgan_projection}
CONTROLS=${CONTROLS-capacity,unrolled_k0}
# The capacity controls' D widths (stacked_setup's D has width 8), from the trainable parameters that
# ganlab.flops.step_cost counts (python -c "from ganlab.config import compose_config; from ganlab.flops
# import step_cost; print(step_cost(compose_config(['experiment=stacked_setup', 'remedy=multiscale',
# 'model.d.width=5'])))"; tests/test_flops.py checks the choice):
#   one D, width 8: 3,273 parameters; multiscale's three Ds, width 8: 8,411 (2.57x, not 3x: the coarser
#   scales' Ds end in smaller linear heads).
#   multiscale, width 4: 2,671 (-18.4 %); width 5: 3,818 (+16.7 %): 5 is the closest to 3,273.
#   one D, width 13: 7,398; width 14: 8,415 (+4); width 15: 9,496: 14 is the closest to 8,411.
# MFLOP per step (batch 64, same count): none 504.2, multiscale 542.4, multiscale width 5 438.6, none
# width 14 760.1, unrolled k=5 2,279.8, unrolled k=0 584.9.
MULTISCALE_D_WIDTH=${MULTISCALE_D_WIDTH:-5}
SINGLE_D_WIDTH=${SINGLE_D_WIDTH:-14}
JOBS=${JOBS:-2}
DATASET=${DATASET:-stacked_fashion_mnist}
OUT=${OUT:-$HOME/ganlab-runs/reproduce_stacked}
DOC=${DOC:-docs/results/stacked.md}
GANLAB=${GANLAB:-.venv/bin/ganlab}
BASE=${DATASET#stacked_}

mkdir -p "$OUT"
# .complete records which remedies' sweeps finished, not their seeds or length: an OUT is for one SEEDS and
# STEPS, kept in $OUT/.knobs, and a call with others is refused (a re-run would skip the new seeds).
knobs="seeds=$SEEDS steps=$STEPS dataset=$DATASET"
if [ -f "$OUT/.knobs" ] && [ "$(cat "$OUT/.knobs")" != "$knobs" ]; then
  echo "reproduce_stacked: $OUT holds runs with $(cat "$OUT/.knobs"), not $knobs; choose another OUT" >&2
  exit 2
elif [ ! -f "$OUT/.knobs" ] && [ -f "$OUT/.complete" ]; then
  echo "reproduce_stacked: $OUT was made before its seeds were recorded (.knobs); choose another OUT" >&2
  exit 2
fi
echo "$knobs" > "$OUT/.knobs"
# The mode classifier labels every channel; it is trained once and cached.
"$GANLAB" classifier dataset="$BASE"

# .complete holds "wall-seconds steps jobs remedies [tag]", one line per sweep (tag: classes=first for the
# conditional rows, the control's for a control, none for the main sweep); a later call with more REMEDIES
# or CONDITIONAL trains only the new rows (resume=auto skips the completed runs). A tag is one word.
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
  local status=0 dir="" arg
  "$GANLAB" train -m experiment=stacked_setup dataset="$DATASET" remedy="$remedies" seed="$SEEDS" steps="$STEPS" \
    eval.every="$STEPS" eval.background=false cpu_threads=1 resume=auto "$@" \
    hydra/launcher=joblib hydra.launcher.n_jobs="$JOBS" || status=$?
  if [ "$status" = 2 ] || [ "$status" -ge 128 ]; then  # refused (a config error) or interrupted: nothing to record
    echo "== the sweep of $remedies stopped (exit $status); run the script again to continue" >&2
    exit "$status"
  fi
  # Done only when every job wrote its summary.json (a failed or diverged run writes one too): a command that died
  # before its jobs (a stale install: "Unknown plugin class", exit 1) must not be recorded as complete.
  for arg in "$@"; do [[ "$arg" == hydra.sweep.dir=* ]] && dir=${arg#hydra.sweep.dir=}; done
  local expected written
  expected=$(( $(tr ',' '\n' <<< "$remedies" | wc -l) * $(tr ',' '\n' <<< "$SEEDS" | wc -l) ))
  written=$(find "$dir" -mindepth 2 -maxdepth 2 -name summary.json 2>/dev/null | wc -l)
  if [ "$written" -lt "$expected" ]; then
    echo "== the sweep of $remedies${tag:+ ($tag)} ended (exit $status) with $written of its $expected runs' summary.json" \
         "in $dir; run the script again to continue" >&2
    exit "$(( status ? status : 1 ))"
  fi
  [ "$status" = 0 ] || echo "== some jobs failed or diverged (exit $status); the report counts them"
  echo "$(( $(date +%s) - start )) $STEPS $JOBS $remedies${tag:+ $tag}" >> "$OUT/.complete"
}

sweep "$REMEDIES" "" hydra.sweep.dir="$OUT"
# The conditional rows label a triple by its first digit: a sweep of their own, in $OUT/conditional
# (the report and stacked_results read every run under $OUT).
[ -z "$CONDITIONAL" ] || sweep "$CONDITIONAL" classes=first dataset.classes=first hydra.sweep.dir="$OUT/conditional"
# The controls (header). Each sweep in a folder of its own: resume=auto refuses a sweep folder that holds
# runs of another config, and the main sweep's check leaves out sub-folders with their own multirun.yaml.
control() { [[ ",$CONTROLS," == *",$1,"* ]]; }
if control capacity; then
  sweep multiscale "d_width=$MULTISCALE_D_WIDTH" model.d.width="$MULTISCALE_D_WIDTH" \
    hydra.sweep.dir="$OUT/controls/multiscale_d$MULTISCALE_D_WIDTH"
  sweep none "d_width=$SINGLE_D_WIDTH" model.d.width="$SINGLE_D_WIDTH" \
    hydra.sweep.dir="$OUT/controls/none_d$SINGLE_D_WIDTH"
fi
if control unrolled_k0; then
  sweep unrolled unrolled.k=0 remedy.unrolled.k=0 hydra.sweep.dir="$OUT/controls/unrolled_k0"
fi

"$GANLAB" report "$OUT" --metrics modes_captured,reverse_kl,modes_corrected,reverse_kl_corrected,domain_fid,kid,precision,recall,coverage,swd
.venv/bin/python scripts/stacked_results.py "$OUT" --out "$DOC"
echo "wrote $DOC (runs in $OUT)"
