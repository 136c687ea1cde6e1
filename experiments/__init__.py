"""Wires games and models together: configs, the three training regimes, evaluation,
probing, run directories, sweeps, figures and the CLI."""
