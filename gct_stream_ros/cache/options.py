"""The names of the cache's choices, in a module that imports nothing (no torch): the parameter table
(``settings.py``) and the session configuration (``stream/config.py``) offer them without loading
the cache itself.

``factory.py`` builds a cache from a ``BACKENDS`` name; ``policies/policy.py`` defines one preset per
``POLICY_PRESETS`` name.
"""

from __future__ import annotations

BACKENDS = ("auto", "contiguous", "flashinfer", "flashinfer_fa3", "paged_gather", "dense")
POLICY_PRESETS = ("sliding_window", "evict3r", "infinitevggt")
