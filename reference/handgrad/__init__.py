"""handgrad: backprop by hand, checked by PyTorch, laid out in a spreadsheet."""

__version__ = "0.1.0"
