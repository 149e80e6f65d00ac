"""Excel export of a comparison run."""
