"""Models that leave a run: self-contained artifact directories (weights, model config,
fitted preprocessing, sampling, provenance, manifest), read back without running code."""
