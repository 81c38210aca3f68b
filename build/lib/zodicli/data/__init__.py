"""Datasets and class sets. Nothing here imports torch."""
