"""recdistill: knowledge distillation experiments for recommendation and ads ranking on Ray."""

__version__ = "0.1.0"
