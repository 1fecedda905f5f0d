"""bench for avemo-edge (see the README)."""
