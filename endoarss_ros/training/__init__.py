"""Losses, multi-task weighting, metrics, and the train / eval loops."""
