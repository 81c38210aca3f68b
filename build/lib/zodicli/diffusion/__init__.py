"""Diffusion: model loading, inversions, ZoDi transfer, label guidance."""
