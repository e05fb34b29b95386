"""Sweeps: Ray Tune over experiment-config paths, with teachers shared across trials."""
