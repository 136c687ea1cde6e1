"""Run directories on disk: writing and reading them, checkpoints, opening a checkpoint's
params, the run store (find, filter, compare) and sweeps of training processes."""
