"""Data shipped with handgrad: ``names.txt`` (the makemore scenario), read with importlib.resources."""
