"""Spiking primitives with no knowledge of any method: surrogates, neurons, kernels, time."""
