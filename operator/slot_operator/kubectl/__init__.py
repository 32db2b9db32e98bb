"""`kubectl slot`: the `kubectl-slot` console script, a kubectl plugin for looking at and probing Slots."""
