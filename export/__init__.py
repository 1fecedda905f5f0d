"""export for avemo-edge (see the README)."""
