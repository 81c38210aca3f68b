"""Scores and figures. Nothing here imports torch."""
