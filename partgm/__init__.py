"""partgm: Partition Generative Models and their masked baselines."""

__version__ = "0.1.0"
