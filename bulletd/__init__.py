"""Bullet OS device side: the .bullet format, the inference runtime and the bulletd daemon."""

__version__ = "0.1.0"
