#!/usr/bin/env bash
# Throughput numbers for the README and closing notes: solver, dataset, env, training, PPO, MFU.
set -euo pipefail
exec agentsim bench --preset quick --seeds 3 --out "${1:-bench.json}"
