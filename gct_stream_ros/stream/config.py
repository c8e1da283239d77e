"""Configuration of a streaming session (model, keyframes, windows, cache), validated."""

from __future__ import annotations

from dataclasses import dataclass, fields

from gct_stream_ros.cache import options as cache_options
from gct_stream_ros.cache.policies.budget import (
    DEFAULT_BUDGET,
    POLICY_CADENCE,
    check_budget,
    check_evict_every,
)
from gct_stream_ros.cache.sizes import DEFAULT_MAX_FRAMES
from gct_stream_ros.model import config as model_config
from gct_stream_ros.model.config import PATCH_SIZE, PRESETS

PRECISIONS = ("float32", "bfloat16", "float16")
"""The torch dtypes inference runs in (``device.py`` maps the names)."""
DTYPES = ("auto", *PRECISIONS)
KEYFRAME_MODES = ("every", "interval", "flow")
WINDOW_MODES = ("off", "online")
RESIZE_METHODS = ("auto", *model_config.RESIZE_METHODS)
"""'auto' and ``model.preprocess``'s methods."""
CHECKPOINT_AUTO = "auto"
"""The preset's weights: the official download for 'lingbot-map', random weights for 'tiny'."""
CHECKPOINT_DOWNLOAD = "hf"
CHECKPOINT_RANDOM = "random"
"""Random weights (tiny preset only); a name rather than an empty string, which rcl's command-line
parser cannot read (``-p model.checkpoint:=``). An empty string is still read as random weights."""


class ConfigError(ValueError):
    """A setting is out of range or inconsistent; the message says which and why."""


@dataclass
class EngineConfig:
    """Everything a ``StreamSession`` needs; field docs are the user-facing descriptions."""

    preset: str = "lingbot-map"
    """Network architecture: 'lingbot-map' (ViT-L, the official checkpoints) or 'tiny' (random
    weights, meaningless geometry; for tests and smoke runs)."""
    checkpoint: str = CHECKPOINT_AUTO
    """Weights: 'auto' (the preset's: 'hf' for lingbot-map, random for tiny), a .pt/.pth/.safetensors
    path, 'hf' to download robbyant/lingbot-map through the Hugging Face cache, or 'random' for
    random weights (only allowed with the tiny preset)."""
    device: str = "auto"
    """'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'."""
    dtype: str = "auto"
    """Inference precision: 'auto' (bf16 on CUDA >= sm80, fp16 on older CUDA, fp32 on CPU),
    'float32', 'bfloat16', 'float16'."""
    image_width: int = 518
    """Width of the model input in pixels (multiple of 14); the height follows the aspect ratio."""
    resize: str = "auto"
    """Resize of camera images to the model input: 'pil' (the reference's, bit-exact), 'torch' (the
    same antialiased bicubic filter, <= 2 grey levels off on < 1 % of the pixels, 3-5x faster on the
    CPU) or 'auto' ('pil' for fp32 inference, 'torch' for bf16/fp16, whose rounding dwarfs it)."""
    num_scale_frames: int = 8
    """Frames at the start of a sequence/window processed together as the scale reference."""
    camera_iterations: int = 4
    """Refinement iterations of the camera head (fewer is faster)."""
    compile: bool = False
    """torch.compile the model's fixed-shape parts: faster GPU steps, after a few minutes of
    compiling for the scale phase and for each new image size."""
    half_depth_head: bool = True
    """Run the DPT depth head in fp16 instead of fp32 (the reference's recipe) when the inference
    dtype is bf16/fp16: ~0.5 ms less per frame on an H200 and less memory, within the bf16 noise
    floor of the reference's outputs (``benchmarks/README.md``); false for the reference's recipe.
    No effect in fp32."""
    half_camera_head: bool = True
    """Keep the camera head's trunk linear layers in fp16 instead of fp32 (the reference's recipe)
    when the inference dtype is bf16/fp16: they are matrix-vector products bound by reading their
    weights, so ~0.4 ms less per frame on an H200 and 0.4 GB less memory, within the bf16 noise floor
    of the reference's poses (``benchmarks/README.md``); false for the reference's recipe. No effect
    in fp32."""
    cuda_graphs: bool = True
    """On CUDA, replay single-frame steps from CUDA graphs (``model/step_graphs.py``): the host
    launches one graph per step instead of ~1,500 kernels. Needs a cache that supports it
    (``cache.backend`` contiguous, which ``auto`` picks in bf16/fp16); others run eagerly."""
    keyframe_mode: str = "every"
    """'every' frame is stored, every N-th ('interval'), or by camera-induced flow ('flow')."""
    keyframe_interval: int = 1
    """N of the 'interval' mode: every N-th frame after the scale frames is stored."""
    flow_threshold: float = 8.0
    """'flow' mode: mean flow in model pixels against the last keyframe above which a frame
    becomes a keyframe."""
    max_keyframe_gap: int = 30
    """'flow' mode: a frame becomes a keyframe at the latest after this many non-keyframes."""
    window_mode: str = "off"
    """'off' (one sequence) or 'online' (restart the caches every window and align the windows
    by Sim(3) over their overlap)."""
    window_size: int = 64
    """Keyframes per window, its scale frames included."""
    window_overlap: int = 8
    """Frames re-processed as the next window's scale frames (>= 1, <= num_scale_frames)."""
    cache_policy: str = "sliding_window"
    """KV-cache memory policy: 'sliding_window' (the reference), 'evict3r', 'infinitevggt'."""
    cache_sliding_window: int = 64
    """'sliding_window': recent frames kept in full besides the scale frames."""
    cache_budget: float = DEFAULT_BUDGET
    """'evict3r'/'infinitevggt': patch tokens kept per global layer, as a fraction of the sliding
    window's ``(num_scale_frames + cache_sliding_window) x patches``; 0.5 attends to half the keys.
    Must hold the scale frames: >= num_scale_frames / (num_scale_frames + cache_sliding_window)."""
    cache_budget_tokens: int = 0
    """Absolute patch-token budget per global layer for 'evict3r'/'infinitevggt' (0 = use
    ``cache_budget``)."""
    cache_evict_every: int = POLICY_CADENCE
    """'evict3r'/'infinitevggt': a layer evicts once it holds this many frames over its budget, all of them
    at once (1 = at every stored frame, as the published policies): the scoring's cost per frame divided
    by it, up to ``cache_evict_every - 1`` frames more attended in between. 0: the policy's own
    (``cache.options.PRESET_EVICT_EVERY``)."""
    cache_max_frames: int = DEFAULT_MAX_FRAMES
    """Stored frames whose special tokens (and camera-head entries) are kept; older non-scale
    frames are recycled so memory stays constant on endless streams (0 = unbounded, as the
    reference)."""
    cache_backend: str = "auto"
    """Attention/storage of the 'sliding_window' cache: 'auto' ('contiguous' on sm90+ GPUs in
    bf16/fp16, FlashInfer on older GPUs when installed, else 'paged_gather'), 'contiguous',
    'flashinfer', 'flashinfer_fa3', 'paged_gather', 'dense' (``cache.factory``); the other policies
    take 'auto' only."""
    compute_points: bool = True
    """Produce world points for every frame (from depth and pose when the point head is absent)."""

    @property
    def cache_description(self) -> str:
        """The cache in a few words, for logs: the policy and what it keeps."""
        kept = f"{self.num_scale_frames} scale + {self.cache_sliding_window} recent frames"
        if self.cache_policy != "sliding_window":
            kept = (f"{self.cache_budget_tokens} patch tokens a layer" if self.cache_budget_tokens
                    else f"budget {self.cache_budget:g} x the window of {kept}")
            every = self.cache_evict_every or cache_options.PRESET_EVICT_EVERY[self.cache_policy]
            if every > 1:
                kept += f", evicting every {every} frames"
        recycled = f"frames recycled past {self.cache_max_frames}" if self.cache_max_frames else "unbounded"
        return f"{self.cache_policy} ({kept}; {recycled})"

    def validate(self) -> EngineConfig:
        """Raise ``ConfigError`` naming the first invalid setting; return self when valid."""

        def choice(name: str, allowed: tuple[str, ...]) -> None:
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"{name}={value!r} is not one of {', '.join(allowed)}")

        def at_least(name: str, low: float) -> None:
            value = getattr(self, name)
            if value < low:
                raise ConfigError(f"{name}={value} must be >= {low}")

        choice("preset", PRESETS)
        choice("dtype", DTYPES)
        choice("resize", RESIZE_METHODS)
        choice("keyframe_mode", KEYFRAME_MODES)
        choice("window_mode", WINDOW_MODES)
        choice("cache_policy", cache_options.POLICY_PRESETS)
        choice("cache_backend", cache_options.BACKENDS)
        if self.cache_policy != "sliding_window" and self.cache_backend != "auto":
            raise ConfigError(f"cache_backend={self.cache_backend!r} runs the 'sliding_window' policy only; "
                              f"'{self.cache_policy}' takes 'auto'")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device={self.device!r} must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        if self.image_width % PATCH_SIZE or self.image_width < 2 * PATCH_SIZE:
            raise ConfigError(f"image_width={self.image_width} must be a multiple of {PATCH_SIZE} and >= 28")
        if self.weights is None and self.preset != "tiny":
            raise ConfigError(f"checkpoint={self.checkpoint!r}: random weights are only allowed with preset "
                              "'tiny' (give a checkpoint path, 'hf' or 'auto')")
        at_least("num_scale_frames", 1)
        at_least("camera_iterations", 1)
        at_least("keyframe_interval", 1)
        at_least("flow_threshold", 0.0)
        at_least("max_keyframe_gap", 1)
        at_least("cache_sliding_window", 1)
        at_least("cache_budget_tokens", 0)
        if self.cache_policy != "sliding_window":
            try:
                check_budget(self.cache_budget, self.cache_budget_tokens, self.num_scale_frames,
                             self.cache_sliding_window)
                check_evict_every(self.cache_evict_every)
            except ValueError as error:
                raise ConfigError(f"cache_{error}") from None
        at_least("cache_max_frames", 0)
        if self.window_mode != "off":
            self._validate_windows()
        if 0 < self.cache_max_frames < self.num_scale_frames + self.cache_sliding_window:
            raise ConfigError(f"cache_max_frames={self.cache_max_frames} must be 0 or >= num_scale_frames + "
                              f"cache_sliding_window ({self.num_scale_frames + self.cache_sliding_window})")
        return self

    def _validate_windows(self) -> None:
        """Window settings are only checked when windows are on: with ``window_mode='off'`` nothing reads
        them, and a smaller ``num_scale_frames`` must not trip over the unused overlap's default."""
        if self.window_overlap < 1:
            raise ConfigError(f"window_overlap={self.window_overlap} must be >= 1")
        if self.window_overlap > self.num_scale_frames:
            raise ConfigError(f"window_overlap={self.window_overlap} must be <= num_scale_frames="
                              f"{self.num_scale_frames} (overlap frames become the next window's scale "
                              "frames)")
        if self.window_size <= self.num_scale_frames:
            raise ConfigError(f"window_size={self.window_size} must exceed "
                              f"num_scale_frames={self.num_scale_frames}")

    @property
    def weights(self) -> str | None:
        """What to load: a checkpoint path or 'hf'; None for random weights."""
        if self.checkpoint == CHECKPOINT_AUTO:
            return None if self.preset == "tiny" else CHECKPOINT_DOWNLOAD
        if self.checkpoint in (CHECKPOINT_RANDOM, ""):
            return None
        return self.checkpoint

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
