"""From run directories to what a reader sees: claim verdicts, figures, tables, REPORT.md,
and `agentsim reproduce`, which trains every stage and runs every analysis in order."""
