"""The PyTorch twin: real torch.nn modules; terms are what torch computed, never recomputed."""
