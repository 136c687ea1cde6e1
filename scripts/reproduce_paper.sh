#!/usr/bin/env bash
# Every paper figure and the claim-by-claim REPORT.md (5 seeds per regime; ~30 min on 2 CPU cores).
set -euo pipefail
exec agentsim reproduce --preset paper --out "${1:-runs/paper}"
