"""The names of the cache's choices, in a module that imports nothing (no torch): the parameter table
(``settings.py``) and the session configuration (``stream/config.py``) offer them without loading
the cache itself.

``factory.py`` builds a cache from a ``BACKENDS`` name; ``policies/policy.py`` defines one preset per
``POLICY_PRESETS`` name.
"""

from __future__ import annotations

BACKENDS = ("auto", "contiguous", "flashinfer", "flashinfer_fa3", "paged_gather", "dense")
POLICY_PRESETS = ("sliding_window", "evict3r", "infinitevggt")
PRESET_EVICT_EVERY = {"evict3r": 1, "infinitevggt": 2}
"""The budgeted presets' eviction cadence (``CachePolicy.evict_every``): infinitevggt scores every key at each
eviction, so evicting every 2 frames halves that cost, and its deviation from the full window stayed as
at every frame (``docs/memory_policies.md``); evict3r's attention mass is measured at every step, so a
longer cadence would only attend more keys."""
