"""training for avemo-edge (see the README)."""
