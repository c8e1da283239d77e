"""A memory policy = scorer x layer budget allocator x granularity x timing, and the named presets.

* **scorer** — which patch tokens deserve to stay: ``recency`` (newest frames), ``key_diversity``
  (InfiniteVGGT: keys far from the layer's mean key) or ``attention_mass`` (Evict3R: attention
  received per frame of exposure). See ``scorers.py``.
* **allocator** — how a fixed per-layer mean budget is split over the layers: ``uniform``,
  ``variance`` (Evict3R: softmax(-variance of the attention mass / temperature)) or
  ``diversity`` (InfiniteVGGT: softmax(diversity / temperature)). See ``allocators.py``.
* **granularity** — ``token`` (any patch token) or ``frame`` (a frame's patches leave together,
  ranked by their mean score); token selection is head-shared or ``per_head`` (each head keeps
  its own tokens, same count: seed 004's InfiniteVGGT).
* **timing** — evict ``before`` the step's attention (the frame's own tokens are candidates) or
  ``after`` it (needed by ``attention_mass``, which scores with that attention); ``evict_every``: once a
  layer holds that many frames over its budget (1: at every stored frame, as published).

Every policy acts on the patch stream only: the scale frames' patches are protected and the
special tokens of every retained frame are kept (bounded by ``max_frames``), as lingbot-map does.

``mass_queries`` picks the queries that measure the attention mass (``attention_mass.py``):
``sampled`` (the preset) or ``exact``.

Presets: ``sliding_window`` (lingbot-map; served by the paged caches, bit-exact with the
reference), ``evict3r`` and ``infinitevggt`` (served by ``BudgetedKVCache``).
"""

from __future__ import annotations

from dataclasses import dataclass

from gct_stream_ros.cache.options import PRESET_EVICT_EVERY
from gct_stream_ros.cache.policies.attention_mass import MASS_QUERIES
from gct_stream_ros.cache.policies.budget import MAX_EVICT_EVERY

SCORERS = ("recency", "key_diversity", "attention_mass")
ALLOCATORS = ("uniform", "variance", "diversity")
GRANULARITIES = ("token", "frame")
TIMINGS = ("before", "after")
# the layer statistic each non-uniform allocator needs, and which scorer produces it
ALLOCATOR_SCORER = {"variance": "attention_mass", "diversity": "key_diversity"}


@dataclass(frozen=True)
class CachePolicy:
    """One composition of the four parts (see the module docstring)."""

    name: str
    scorer: str = "recency"
    allocator: str = "uniform"
    granularity: str = "frame"
    timing: str = "before"
    temperature: float = 0.5
    """Softmax temperature of the non-uniform allocators (0.5 in both published policies)."""
    per_head: bool = False
    """Token granularity only: every head keeps its own tokens (the scorer must score per head)."""
    mass_queries: str = "sampled"
    """``attention_mass`` only: ``sampled`` stand-in queries or ``exact`` (every query)."""
    evict_every: int = 1
    """Stored frames over its budget at which a layer evicts, all at once (``budgeted_cache.py``)."""

    def __post_init__(self) -> None:
        for value, allowed in ((self.scorer, SCORERS), (self.allocator, ALLOCATORS),
                               (self.granularity, GRANULARITIES), (self.timing, TIMINGS),
                               (self.mass_queries, MASS_QUERIES)):
            if value not in allowed:
                raise ValueError(f"policy {self.name!r}: {value!r} is not one of {', '.join(allowed)}")
        if self.scorer == "attention_mass" and self.timing != "after":
            raise ValueError(f"policy {self.name!r}: attention_mass scores with the step's attention, "
                             "so it needs timing='after'")
        needed = ALLOCATOR_SCORER.get(self.allocator)
        if needed is not None and needed != self.scorer:
            raise ValueError(f"policy {self.name!r}: the {self.allocator!r} allocator needs the "
                             f"{needed!r} scorer")
        if self.per_head and (self.granularity != "token" or self.scorer != "key_diversity"):
            raise ValueError(f"policy {self.name!r}: per-head selection needs token granularity and the "
                             "key_diversity scorer (the others score every head alike)")
        if self.temperature <= 0:
            raise ValueError(f"policy {self.name!r}: temperature must be > 0")
        if not 1 <= self.evict_every <= MAX_EVICT_EVERY:
            raise ValueError(f"policy {self.name!r}: evict_every must be between 1 and {MAX_EVICT_EVERY}")


PRESETS = {
    "sliding_window": CachePolicy("sliding_window"),
    "evict3r": CachePolicy("evict3r", scorer="attention_mass", allocator="variance", granularity="token",
                           timing="after", evict_every=PRESET_EVICT_EVERY["evict3r"]),
    "infinitevggt": CachePolicy("infinitevggt", scorer="key_diversity", allocator="diversity",
                                granularity="token", timing="before", per_head=True,
                                evict_every=PRESET_EVICT_EVERY["infinitevggt"]),
}


def policy_preset(name: str) -> CachePolicy:
    if name not in PRESETS:
        raise ValueError(f"cache policy {name!r} is not one of {', '.join(PRESETS)}")
    return PRESETS[name]
