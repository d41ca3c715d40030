"""ConvScope's FastAPI backend."""

__version__ = "0.1.0"
