"""Datasets (raw sources), presets, transforms and the synthetic scenes."""
