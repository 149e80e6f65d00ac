"""handgrad's version: a leaf module, so the report can name it without importing the package."""

__version__ = "0.1.0"
