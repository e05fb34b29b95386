"""Cross-architecture transfer (CrossAdapt offline stage)."""
