"""Keep freed memory in the process for the next step's arrays (glibc's malloc, Linux).

A lock-step makes and drops arrays of the same sizes every step: the hand side's activations
and gradients, the trace's copies, the comparison's temporaries. glibc serves a request of
128 kB or more from a fresh ``mmap`` and unmaps it when freed (raising that threshold only as it
sees frees), and gives the top of its heap back to the system once more than the trim threshold
is free. Every such array then starts as untouched pages, and each page's first write is a page
fault: on the 2-core development VM ~2.3 µs per 4 kB page, so a 1 MB array costs 0.6 ms before
its first byte is computed. Measured there (``scripts/bench.py``-sized models, the comparison of
one step's traces): conv 32 → 12 ms, LSTM 34 → 22 ms with the settings below, the same doubles.

:func:`keep_freed_memory` sets ``M_MMAP_THRESHOLD`` to 32 MB (glibc's largest; an array under it
comes from the heap and its pages are reused), ``M_TRIM_THRESHOLD`` to 1 GB and ``M_TOP_PAD`` to
64 MB (the heap keeps its freed top instead of returning it each step). The price: the process
holds on to its largest step's memory until it exits, which is what a run needs again at the next
step anyway. Called by the command line (:func:`handgrad.cli.main`) for its own process; a
library caller decides for its own. Elsewhere (no glibc: macOS, Windows, musl) it does nothing.
Values are untouched: only where the bytes live changes.
"""

from __future__ import annotations

import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's <malloc.h>
SETTINGS = ((M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, 1 << 30), (M_TOP_PAD, 64 << 20))

_kept = False


def keep_freed_memory() -> bool:
    """Apply :data:`SETTINGS` with ``mallopt`` once; True when glibc accepted every one."""
    global _kept
    if _kept or not sys.platform.startswith("linux"):
        return _kept
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _kept = all(mallopt(option, value) == 1 for option, value in SETTINGS)
    return _kept
