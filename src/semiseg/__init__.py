"""semiseg: semi-supervised semantic segmentation in one framework."""

__version__ = "0.1.0"
