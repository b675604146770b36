"""Pruning: the configuration, the pure kernels, the layer-by-layer loop and its callbacks."""
