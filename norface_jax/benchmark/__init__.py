"""Throughput benchmarks: the JAX train/inference step beside its PyTorch twin."""
