"""The hand-derived reference: pure NumPy, never imports torch."""
