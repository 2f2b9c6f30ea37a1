"""Synthetic endoscopic scenes, dataset readers and writers, and augmentations."""
