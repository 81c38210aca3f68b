"""zodi: adapt semantic-segmentation models to new domains with diffusion models."""

__version__ = "0.1.0"
