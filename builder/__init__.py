"""Feature Atlas: static-site generator for SAE feature atlases of single-cell foundation models."""

__version__ = "0.1.0"
