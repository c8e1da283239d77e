"""Dense KV cache of the global attention: one K/V tensor per layer and stored frame.

The reference implementation of the contract in ``cache/base.py`` with the lingbot-map
sliding-window policy: the ``scale_frames`` first stored frames are kept whole, the
``sliding_window`` most recent other stored frames are kept whole, and the special tokens of
every stored frame are kept forever (the trajectory memory). With ``max_frames > 0`` the
specials are bounded too: when more than ``max_frames`` frames hold tokens, the oldest
non-scale frame is dropped entirely, which bounds memory and attention cost on endless
streams at the price of forgetting the oldest trajectory.

The keys are gathered for every attention call in the canonical order of ``cache/base.py``
(plain ``torch.cat`` + SDPA), which makes this cache the bit-exact yardstick of the paged ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gct_stream_ros.cache.attention import dense_attention
from gct_stream_ros.cache.base import CacheStats, StepMode
from gct_stream_ros.cache.sizes import CacheSizes, SizedCache
from gct_stream_ros.cache.stepped_cache import SteppedKVCache


@dataclass
class _FrameRecord:
    index: int
    """Temporal index of the frame (its position among the stored frames of the sequence)."""
    scale: bool
    """Protected scale frame: never evicted."""
    whole: bool = True
    """Patch tokens still cached (False once the policy evicted them, specials stay)."""


class DenseKVCache(SizedCache, SteppedKVCache):
    """Sliding-window KV cache with per-frame dense tensors (see the module docstring).

    ``dtype`` is the storage dtype of K/V (fp32 for parity, bf16 on GPU); queries attend in
    their own dtype.
    """

    def __init__(self, num_layers: int, num_special_tokens: int = 6, scale_frames: int = 8,
                 sliding_window: int = 64, max_frames: int = 0, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.sizes = CacheSizes(num_layers, num_special_tokens, scale_frames, sliding_window, max_frames)
        self.dtype = dtype
        self.reset()

    def _clear(self) -> None:
        self._records: list[_FrameRecord] = []
        # per layer: temporal index -> (K, V) of that frame, [P, H, D] or [specials, H, D] once evicted
        self._kv: list[dict[int, tuple[torch.Tensor, torch.Tensor]]] = [{} for _ in range(self.num_layers)]
        self._frames_evicted = 0
        self._specials_dropped = 0
        self._tokens_per_frame: int | None = None

    def _begin(self, frames: list[int], patches_per_frame: int, mode: StepMode) -> None:
        tokens_per_frame = patches_per_frame + self.num_special_tokens
        if self._tokens_per_frame not in (None, tokens_per_frame):
            raise ValueError(f"tokens per frame changed from {self._tokens_per_frame} to {tokens_per_frame}: "
                             "reset the cache when the image size changes")
        if mode is StepMode.SKIP:
            return
        self._tokens_per_frame = tokens_per_frame
        self._records += [_FrameRecord(index=index, scale=index < self.scale_frames) for index in frames]
        if mode is StepMode.STORE:
            self._evict()

    def _attend(self, layer: int, frames: list[int], mode: StepMode, q: torch.Tensor, k: torch.Tensor,
                v: torch.Tensor) -> torch.Tensor:
        if len(frames) > 1:
            # phase 1: the step's own tokens in natural order, bidirectional
            keys, values = k.flatten(0, 1), v.flatten(0, 1)  # [S*P, H, D]
        else:
            keys = values = None
        if mode is not StepMode.SKIP:
            for index, frame_k, frame_v in zip(frames, k, v):
                # a copy: a view would pin the whole step's q/k/v buffers for as long as the frame is cached
                self._kv[layer][index] = (frame_k.to(self.dtype, copy=True),
                                          frame_v.to(self.dtype, copy=True))
        if keys is None:
            own = (k[0].to(self.dtype), v[0].to(self.dtype)) if mode is StepMode.SKIP else None
            keys, values = self._visible(layer, own)
        return dense_attention(q, keys, values)

    def _end(self, frames: list[int], mode: StepMode) -> None:
        self._trim_layers()

    def _commit(self) -> None:
        self._evict()
        self._trim_layers()

    def _rollback(self, frame: int) -> None:
        self._records.pop()
        for layer_kv in self._kv:
            layer_kv.pop(frame, None)
        if not self._records:
            self._tokens_per_frame = None

    def stats(self) -> CacheStats:
        specials = self.num_special_tokens
        tokens = [sum(k.shape[0] for k, _ in layer_kv.values()) for layer_kv in self._kv]
        nbytes = sum(k.numel() * k.element_size() + v.numel() * v.element_size()
                     for layer_kv in self._kv for k, v in layer_kv.values())
        tokens_per_frame = self._tokens_per_frame or 0
        protected = sum(tokens_per_frame if r.scale else specials for r in self._records)
        return CacheStats(frames_stored=self.frames_stored, frames_evicted=self._frames_evicted,
                          tokens_per_layer=tokens, bytes_allocated=nbytes, bytes_used=nbytes,
                          pages_in_use=0, protected_tokens=protected, policy="sliding_window",
                          specials_dropped=self._specials_dropped)

    def _visible(self, layer: int, own: tuple[torch.Tensor, torch.Tensor] | None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values in the canonical order; ``own`` (a SKIP frame's K/V) goes last."""
        specials = self.num_special_tokens
        layer_kv = self._kv[layer]
        whole = [r for r in self._records if r.whole]
        ordered = [r for r in whole if r.scale] + [r for r in whole if not r.scale]
        entries = [layer_kv[r.index] for r in ordered] + ([own] if own is not None else [])
        special_entries = [layer_kv[r.index] for r in self._records] + ([own] if own is not None else [])
        keys = [k[specials:] for k, _ in entries] + [k[:specials] for k, _ in special_entries]
        values = [v[specials:] for _, v in entries] + [v[:specials] for _, v in special_entries]
        return torch.cat(keys), torch.cat(values)

    def _evict(self) -> None:
        """Apply the window (and the ``max_frames`` bound) to the frame records."""
        window = [r for r in self._records if r.whole and not r.scale]
        for record in window[: max(len(window) - self.sliding_window, 0)]:
            record.whole = False
            self._frames_evicted += 1
        while self.max_frames and len(self._records) > self.max_frames:
            oldest = next(r for r in self._records if not r.scale)
            if oldest.whole:
                self._frames_evicted += 1
            self._records.remove(oldest)
            self._specials_dropped += 1

    def _trim_layers(self) -> None:
        """Release the K/V that the records no longer reference."""
        specials = self.num_special_tokens
        kept = {r.index: r.whole for r in self._records}
        for layer_kv in self._kv:
            for index in list(layer_kv):
                if index not in kept:
                    del layer_kv[index]
                elif not kept[index] and layer_kv[index][0].shape[0] > specials:
                    k, v = layer_kv[index]
                    layer_kv[index] = (k[:specials].clone(), v[:specials].clone())

