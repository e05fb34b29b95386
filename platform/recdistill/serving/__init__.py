"""Serving: export a ranker's main tower (TorchScript, torch.export, ONNX) and measure its cost."""
