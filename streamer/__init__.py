"""Live video anonymizer: every face in every frame found by a neural detector and hidden before it leaves."""

__version__ = "0.1.0"
