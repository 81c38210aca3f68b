"""Segmentation models and their training and inference."""
