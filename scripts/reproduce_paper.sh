#!/usr/bin/env bash
# Every paper figure and the claim-by-claim REPORT.md (5 seeds per regime, 8 stages; 23.6 min measured
# on 2 CPU cores, target <= 30).
set -euo pipefail
exec agentsim reproduce --preset paper --out "${1:-runs/paper}"
