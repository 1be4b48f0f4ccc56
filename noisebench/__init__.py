"""noisebench: measure how label and pixel noise change what a neural network learns."""

__version__ = "0.1.0"
