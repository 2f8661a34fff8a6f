#!/usr/bin/env bash
# `make reproduce-toy`: the VEEGAN and PacGAN Table 1 rows on the ring and the grid at the Unrolled-GAN
# notebook's step count (25,000), 5 seeds each; then `ganlab report` over all of it, and
# docs/results/toy.md (ours next to the papers', reference rows, verdicts over seeds, training length
# against the paper's, whether each row was still moving, machine time).
#
#   scripts/reproduce_toy.sh [baselines] [veegan] [pacgan] [pacgan34] [remedies] [remedies2]
#                                          # default: baselines veegan pacgan pacgan34
#
# The parts:
#   baselines  the GAN row of each candidate setup (VEEGAN-row and PacGAN setups, ring and grid) over
#              BASELINE_SEEDS (10): which setups collapse is measured before any remedy row is read, by the
#              rule docs/results/toy.md states first (scripts/toy_results.py BASELINE_RULE);
#   (the remedy parts below train only in the setups whose GAN the baselines part found to be a baseline)
#   veegan     VEEGAN, Unrolled GAN (k = 5) and its k = 0 control (the same saturating G objective, no
#              unrolling) in the VEEGAN-row setup, ring and grid (the Unrolled-GAN notebook's length,
#              25,000 steps);
#   pacgan     PacGAN2 in PacGAN's setup, ring and grid;
#   pacgan34   PacGAN3 and PacGAN4, ring and grid;
#   remedies, remedies2   every other remedy in the VEEGAN-row setup (not in the default);
#   methods    the conditional GANs (cgan_projection, acgan) and the local generator, same setup
#              (three multiruns: methods, methods_local_ring, methods_local_grid);
#   losses     the Loss-Sensitive GAN (loss=loss_sensitive), same setup.
#
# Runs in parts, across sessions if need be: every multirun runs with resume=auto into $OUT/PART, so
# running the script again with the same OUT skips the runs that completed and resumes the ones that
# were interrupted (from their last checkpoint, every checkpoint.every steps) or never started. A part
# whose runs all completed leaves $OUT/PART/.complete with the knobs it ran with; a later run with
# other STEPS, EVERY or SEEDS into the same OUT is refused (use another OUT). Each segment's wall time
# is appended to $OUT/PART/.segments; the doc sums the runs' own training time (summary.json wall_seconds).
#
# Knobs (environment): SEEDS (remedy rows, default 0,1,2,3,4); BASELINE_SEEDS (the GAN rows, default
# 0,...,9: with 10 baseline and 5 remedy seeds an exact permutation test reaches p = 2/3003); STEPS (veegan, remedies parts; default 25000);
# PACGAN_STEPS (default 25000); EVERY (evaluation cadence, default 500); JOBS (parallel jobs through
# the joblib launcher, default 2); OUT (default $HOME/ganlab-runs/reproduce_toy: outside the checkout,
# so a fresh clone of the work tree does not lose it); DOC (default docs/results/toy.md); FIGURES (docs/figures).
set -euo pipefail
cd "$(dirname "$0")/.."

SEEDS=${SEEDS:-0,1,2,3,4}
BASELINE_SEEDS=${BASELINE_SEEDS:-0,1,2,3,4,5,6,7,8,9}
STEPS=${STEPS:-25000}
PACGAN_STEPS=${PACGAN_STEPS:-25000}
EVERY=${EVERY:-500}
JOBS=${JOBS:-2}
OUT=${OUT:-$HOME/ganlab-runs/reproduce_toy}
DOC=${DOC:-docs/results/toy.md}
FIGURES=${FIGURES:-docs/figures}
GANLAB=${GANLAB:-.venv/bin/ganlab}
PARTS=("$@")
[ ${#PARTS[@]} -eq 0 ] && PARTS=(baselines veegan pacgan pacgan34)

part() {  # part NAME STEPS OVERRIDES...: one resumable multirun into $OUT/NAME over $PART_SEEDS (default SEEDS)
  local name=$1 steps=$2; shift 2
  local seeds=${PART_SEEDS:-$SEEDS}
  local knobs="steps=$steps every=$EVERY seeds=$seeds"
  if [ -f "$OUT/$name/.complete" ]; then
    if [ "$(cat "$OUT/$name/.complete")" != "$knobs" ]; then
      echo "reproduce_toy: $OUT/$name was completed with $(cat "$OUT/$name/.complete"), not $knobs; choose another OUT" >&2
      exit 2
    fi
    echo "== $name: already complete in $OUT/$name"; return
  fi
  echo "== $name ($steps steps): $*"
  mkdir -p "$OUT/$name"
  local start status=0; start=$(date +%s)
  # W1/W2 and pictures inline (no worker process per job: the joblib jobs already fill the cores).
  # Failed or diverged jobs do not stop the rest: the report counts them.
  "$GANLAB" train -m "$@" seed="$seeds" steps="$steps" eval.every="$EVERY" resume=auto \
    eval.background=false hydra/launcher=joblib hydra.launcher.n_jobs="$JOBS" hydra.sweep.dir="$OUT/$name" \
    || status=$?
  echo "$(( $(date +%s) - start )) $steps $JOBS $status" >> "$OUT/$name/.segments"
  if [ "$status" -eq 0 ]; then
    echo "$knobs" > "$OUT/$name/.complete"
  else
    echo "== $name: some jobs failed, diverged or were interrupted (exit $status); run the script again to resume"
  fi
}

# The remedy parts train only where the setup's GAN is a baseline by the rule (toy_results.py BASELINE_RULE),
# which the baselines part measures: no machine time on tables whose GAN does not collapse. A remedy part
# asked for before its baseline is measured is refused (exit 2).
only_baselines() {  # only_baselines PRESET,PRESET...: the presets (SETUP_DATASET_ROW) whose setup's GAN is a baseline
  local status keep=() preset word
  status=$(.venv/bin/python scripts/toy_results.py "$OUT" --baselines) || {
    echo "reproduce_toy: reading the baselines in $OUT failed (above)" >&2
    exit 2
  }
  for preset in ${1//,/ }; do
    word=$(awk -v s="${preset%%_*}" -v d="$(cut -d_ -f2 <<< "$preset")" '$1 == s && $2 == d {print $3}' <<< "$status")
    if [ -z "$word" ] || [ "$word" = undecided ]; then
      echo "reproduce_toy: ${preset%_*}'s GAN baseline is not measured over 10 seeds yet; run the baselines part first" >&2
      exit 2
    fi
    [ "$word" = collapsing ] || [ "$word" = mode-dropping ] && keep+=("$preset")
  done
  (IFS=,; echo "${keep[*]+${keep[*]}}")
}
remedy_part() {  # remedy_part NAME STEPS PRESETS [overrides...]: a part over the presets that passed
  local name=$1 steps=$2 presets
  presets=$(only_baselines "$3") || exit 2
  shift 3
  if [ -z "$presets" ]; then
    echo "== $name: no setup of its rows is a baseline; nothing to train"
    return
  fi
  part "$name" "$steps" experiment="$presets" "$@"
}

for name in "${PARTS[@]}"; do
  case $name in
    # Experiment first, seed second: Hydra runs every seed of one preset before the next preset.
    # The baselines first, cheap setups first: they decide which tables are run at all.
    baselines) PART_SEEDS=$BASELINE_SEEDS part baselines_veegan "$STEPS" experiment=veegan_ring_gan,veegan_grid_gan
               PART_SEEDS=$BASELINE_SEEDS part baselines_pacgan "$PACGAN_STEPS" experiment=pacgan_grid_gan,pacgan_ring_gan ;;
    # The k = 0 control: unrolled's G objective (the saturating game value) without unrolling, so a difference
    # between it and k = 5 is the unrolling's, not the objective's.
    veegan) remedy_part veegan "$STEPS" veegan_ring_veegan,veegan_grid_veegan,veegan_ring_unrolled,veegan_grid_unrolled
            remedy_part veegan_unrolled_k0 "$STEPS" veegan_ring_unrolled,veegan_grid_unrolled remedy.unrolled.k=0 ;;
    pacgan) remedy_part pacgan "$PACGAN_STEPS" pacgan_grid_pac2,pacgan_ring_pac2 ;;
    pacgan34) remedy_part pacgan34 "$PACGAN_STEPS" pacgan_grid_pac3,pacgan_grid_pac4,pacgan_ring_pac3,pacgan_ring_pac4 ;;
    # The same setup as the VEEGAN GAN rows, which are its remedy=none baseline.
    remedies) part remedies "$STEPS" experiment=veegan_setup dataset=ring,grid \
        remedy=unrolled_surrogate,pacgan,minibatch_disc,minibatch_std,feature_matching,label_smoothing,spectral_norm,instance_noise ;;
    remedies2) part remedies2 "$STEPS" experiment=veegan_setup dataset=ring,grid \
        remedy=madgan,mrgan,ortho_jacobian,drs,ebgan ;;
    # The conditional GANs (the mode index is the label) and the local generator, same setup; the local
    # generator's tangent scale c is each mixture's mode variance std^2 (its YAML: unit tangents are 50x
    # the ring's mode std).
    methods) part methods "$STEPS" experiment=veegan_setup dataset=ring,grid remedy=cgan_projection,acgan
             part methods_local_ring "$STEPS" experiment=veegan_setup dataset=ring remedy=local_generator \
               remedy.local_generator.scale=4e-4
             part methods_local_grid "$STEPS" experiment=veegan_setup dataset=grid remedy=local_generator \
               remedy.local_generator.scale=0.0025 ;;
    # Another loss in the same setup (its networks, optimizers and length): the Loss-Sensitive GAN.
    losses) part losses "$STEPS" experiment=veegan_setup dataset=ring,grid loss=loss_sensitive ;;
    *) echo "unknown part '$name': choose from baselines, veegan, pacgan, pacgan34, remedies, remedies2, methods, losses" >&2; exit 2 ;;
  esac
done

"$GANLAB" report "$OUT"
.venv/bin/python scripts/toy_results.py "$OUT" --seeds "$SEEDS" --out "$DOC" --figures "$FIGURES"
echo "wrote $DOC (runs in $OUT)"
