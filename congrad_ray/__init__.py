"""congrad-ray: CONGRAD filtering of multilingual preference data on Ray."""

__version__ = "0.1.0"
