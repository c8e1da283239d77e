"""KV-cache memory policies: scorer x layer budget allocator x granularity x timing (``policy.py``)."""
