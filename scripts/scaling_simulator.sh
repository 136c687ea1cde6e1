#!/usr/bin/env bash
# The simulator's scaling grid on tic-tac-toe (issue 17): next_token at 2 and 4 layers × width 64
# and 128 × 500, 1000 and 2000 steps of 128 games (3 seeds, lr 3e-3, 100,000 persona games), then
# one figure of the gap against training FLOPs with a power law per size (STUDIES.md, "The
# simulator's size"). 50 minutes on 2 CPU cores beside another job (2026-12-08).
# Usage: scripts/scaling_simulator.sh [DIR]
set -euo pipefail
out="${1:-runs/scaling}"
for size in "2 64 4" "4 64 4" "2 128 8" "4 128 8"; do
  read -r layers width heads <<< "$size"
  for steps in 500 1000 2000; do
    run="$out/L${layers}d${width}s${steps}"
    [ -f "$run/final.json" ] && continue
    resume=(); [ -d "$run" ] && resume=(--resume)  # a killed run continues from its last checkpoint
    agentsim train --preset quick --regime next_token --out "$run" "${resume[@]}" \
      --set train.steps="$steps" --set train.chunk=25 --set train.eval_every=4 --set train.lr=0.003 \
      --set data.num_games=100000 --set "train.seeds=[0,1,2]" \
      --set model.num_layers="$layers" --set model.d_model="$width" --set model.num_heads="$heads"
  done
done
exec agentsim scaling "$out"/L*d*s* --measure simulator_gap --target 0.02 --out "$out/scaling_simulator_gap.json"
