"""Online distillation: the batch phase, then the log replayed window by window, with
asymmetric co-distillation (teacher step every τ batches), shift detection and replay."""
