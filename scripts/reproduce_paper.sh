#!/usr/bin/env bash
# Every paper figure and the claim-by-claim REPORT.md (5 seeds per regime, 8 stages, the claim-1 value
# measure for three agents; 36.5 min measured on 2 CPU cores at load 3-4 from a fresh clone, 2026-12-01).
set -euo pipefail
exec agentsim reproduce --preset paper --out "${1:-runs/paper}"
