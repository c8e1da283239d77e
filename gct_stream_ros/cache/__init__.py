"""KV caches of the aggregator's global attention and their memory policies (torch only).

``base.py`` is the contract; ``factory.build_cache`` picks an implementation by the names in
``options.py``:

* ``dense.py``: per-frame dense tensors, the bit-exact yardstick;
* ``paged_store.py`` (+ ``frame_slots.py``): page pools and their bookkeeping, shared by
  ``paged_gather.py`` (gather + SDPA) and ``paged_flashinfer.py`` (FlashInfer, with
  ``page_table.py``), both driven by ``paged_cache.py``;
* ``contiguous_store.py``: the same bookkeeping over one K/V tensor per layer whose visible keys
  are one range, attended in place by ``contiguous_cache.py`` (cuDNN through
  ``captured_attention.py``, the flash kernel, ``attention.py``'s merge);
* ``policies/``: the evict3r / infinitevggt memory policies on ``policies/budgeted_cache.py``.
"""
