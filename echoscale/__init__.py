"""echoscale: compute-optimal echo segmentation and perfusion quantification."""

__version__ = "0.1.0"
