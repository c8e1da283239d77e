"""Every parameter of the node: one table shared by the node, the offline tool, the launch file and the docs.

Names are dotted (``model.preset``); a YAML file in the ROS params layout nests them
(``model: {preset: tiny}``). Engine parameters take their defaults and choices from
``EngineConfig`` so the two never disagree; ``engine_config`` turns values into one.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from gct_stream_ros.cache import options as cache_options
from gct_stream_ros.cache.policies.budget import MAX_EVICT_EVERY
from gct_stream_ros.stream.config import (
    DTYPES,
    KEYFRAME_MODES,
    PATCH_SIZE,
    PRESETS,
    RESIZE_METHODS,
    WINDOW_MODES,
    ConfigError,
    EngineConfig,
)
from gct_stream_ros.stream.scale.options import (
    ODOMETRY_INPUTS,
    SCALE_SOURCES,
    ScaleOptions,
    ScaleOptionsError,
)

Value = bool | int | float | str
NODE_NAME = "gct_stream_node"
ROS_OWNED_PARAMETERS = frozenset({"use_sim_time", "start_type_description_service"})
"""Parameters every rclpy node has; parameter files may set them, this table does not own them."""
ROS_OWNED_PREFIXES = ("qos_overrides.",)
"""Parameter families ROS reads itself (publisher and subscription QoS overrides)."""
CAMERA_FRAME_FROM_INPUT = "auto"
"""``frames.camera`` value that takes the camera frame from the input (a name, not an empty string:
``-p frames.camera:=`` cannot be written on a ROS command line)."""

_ENGINE_DEFAULTS = EngineConfig()
CAMERA_INFO_SYNC_MODES = ("exact", "latest")
_SCALE_DEFAULTS = ScaleOptions()


class SettingsError(ValueError):
    """A parameter value is unknown, of the wrong type, out of range or inconsistent; says which and why."""


@dataclass(frozen=True)
class Setting:
    """One parameter: its type is the type of its default."""

    name: str
    default: Value
    description: str
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    step: int | None = None
    """Integers only: valid values are ``low + k * step``."""
    engine_field: str = ""
    """The ``EngineConfig`` field this parameter sets; empty for the node's own parameters."""
    scale_field: str = ""
    """The ``ScaleOptions`` field this parameter sets (the ``scale.*`` group)."""
    restart: bool = False
    """True when the value is only read at start-up (changing it at run time is refused)."""
    frame: bool = False
    """The value is a TF frame name: refused where tf2 would refuse it (see ``check_frame_name``)."""

    @property
    def type(self) -> type:
        return type(self.default)

    def check(self, value: object) -> Value:
        """``value`` converted to this setting's type; ``SettingsError`` saying why when it cannot be."""
        value = self._coerce(value)
        if self.choices and value not in self.choices:
            raise SettingsError(f"{self.name}={value!r} is not one of {', '.join(self.choices)}")
        if self.low is not None and value < self.low:
            raise SettingsError(f"{self.name}={value} is below the minimum {self.low:g}")
        if self.high is not None and value > self.high:
            raise SettingsError(f"{self.name}={value} is above the maximum {self.high:g}")
        if self.step and self.low is not None and (value - self.low) % self.step:
            raise SettingsError(f"{self.name}={value} must be {self.low:g} plus a multiple of {self.step}")
        if self.frame:
            check_frame_name(self.name, value)
        return value

    def _coerce(self, value: object) -> Value:
        wanted = self.type
        # bool is an int subclass: never let True pass as 1 or 1 as True.
        if wanted is bool and isinstance(value, bool):
            return value
        if wanted is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if wanted is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if wanted is str and isinstance(value, str):
            return value
        raise SettingsError(f"{self.name} takes a {wanted.__name__}, got {value!r} ({type(value).__name__})")


def check_frame_name(name: str, value: str) -> None:
    """Refuse frame names tf2 refuses (empty, a leading '/') and names with blanks or control characters,
    which tf2 takes but no other tool (RViz, ``ros2 run tf2_ros``, URDF) can name back."""
    if not value:
        raise SettingsError(f"{name} is empty: a TF frame needs a name")
    if value.startswith("/"):
        raise SettingsError(f"{name}={value!r}: tf2 frame names cannot start with '/' "
                            f"(use {value.lstrip('/')!r})")
    if any(character.isspace() or not character.isprintable() for character in value):
        raise SettingsError(f"{name}={value!r}: frame names cannot hold blanks or control characters")


def _engine(name: str, field: str, description: str, **limits: object) -> Setting:
    """An engine parameter; its default is ``EngineConfig``'s unless ``default`` is given."""
    default = limits.pop("default", getattr(_ENGINE_DEFAULTS, field))
    return Setting(name, default, description, engine_field=field, restart=True, **limits)


def _scale(name: str, field: str, description: str, **limits: object) -> Setting:
    """A metric-scale parameter; its default is ``ScaleOptions``'s."""
    default = getattr(_SCALE_DEFAULTS, field)
    return Setting(name, default, description, scale_field=field, restart=True, **limits)


SETTINGS: tuple[Setting, ...] = (
    _engine("model.preset", "preset",
            "Network: 'lingbot-map' (ViT-L) or 'tiny' (random weights, for tests)", choices=PRESETS),
    _engine("model.checkpoint", "checkpoint",
            "Weights: 'auto' (the preset's: 'hf' for lingbot-map, random for tiny), a .pt/.pth/.safetensors "
            "path, 'hf' (Hugging Face download) or 'random' (tiny only)"),
    _engine("model.device", "device", "'auto' (CUDA if available), 'cpu', 'cuda' or 'cuda:N'"),
    _engine("model.dtype", "dtype",
            "Inference precision ('auto': bf16/fp16 on CUDA, fp32 on CPU)", choices=DTYPES),
    _engine("model.image_width", "image_width",
            "Model input width in pixels; the height keeps the aspect ratio",
            low=2 * PATCH_SIZE, high=2044, step=PATCH_SIZE),
    _engine("model.resize", "resize",
            "Image resize: 'pil' (the reference's, exact), 'torch' (same filter, 3-5x less CPU, <= 2 "
            "levels off on < 1 % of pixels), 'auto' (pil in fp32, torch in bf16/fp16)",
            choices=RESIZE_METHODS),
    _engine("model.num_scale_frames", "num_scale_frames",
            "Frames processed together as the scale reference", low=1, high=64),
    _engine("model.camera_iterations", "camera_iterations",
            "Camera-head refinement iterations (fewer: faster)", low=1, high=16),
    _engine("model.compile", "compile",
            "torch.compile the model: faster GPU steps after minutes of compiling"),
    _engine("model.half_depth_head", "half_depth_head",
            "With a bf16/fp16 model.dtype, run the depth head in fp16 (faster; false: the reference's fp32)"),
    _engine("model.half_camera_head", "half_camera_head",
            "With a bf16/fp16 model.dtype, keep the camera head's linear layers in fp16 (faster; false: "
            "the reference's fp32)"),
    _engine("model.cuda_graphs", "cuda_graphs",
            "On CUDA, replay single-frame steps from CUDA graphs (contiguous cache, budgeted steady steps)"),
    _engine("keyframes.mode", "keyframe_mode",
            "Which frames are stored in the cache: every, interval or flow", choices=KEYFRAME_MODES),
    _engine("keyframes.interval", "keyframe_interval",
            "'interval' mode: every N-th frame is a keyframe", low=1, high=1000),
    _engine("keyframes.flow_threshold", "flow_threshold",
            "'flow' mode: mean flow (model pixels) that makes a frame a keyframe", low=0.0, high=1000.0),
    _engine("keyframes.max_gap", "max_keyframe_gap",
            "'flow' mode: at most this many non-keyframes in a row", low=1, high=10000),
    _engine("window.mode", "window_mode",
            "'off' (one sequence) or 'online' (windows aligned by Sim(3))", choices=WINDOW_MODES),
    _engine("window.size", "window_size", "Keyframes per window, scale frames included", low=2, high=100000),
    _engine("window.overlap", "window_overlap",
            "Frames shared by consecutive windows (<= num_scale_frames; read when window.mode is online)",
            low=1, high=64),
    _engine("cache.policy", "cache_policy", "KV-cache memory policy", choices=cache_options.POLICY_PRESETS),
    _engine("cache.sliding_window", "cache_sliding_window",
            "'sliding_window': recent frames kept in full", low=1, high=100000),
    _engine("cache.budget", "cache_budget",
            "evict3r/infinitevggt: patch tokens kept per layer as a fraction of the sliding window's "
            "(>= scale / (scale + window))", low=0.01, high=100.0),
    _engine("cache.budget_tokens", "cache_budget_tokens",
            "evict3r/infinitevggt: absolute patch-token budget per layer (0 = use cache.budget)",
            low=0, high=10**9),
    _engine("cache.evict_every", "cache_evict_every",
            "evict3r/infinitevggt: a layer evicts once it holds this many frames over its budget, all at "
            "once (0 = the policy's own: "
            + ", ".join(f"{name} {every}" for name, every in cache_options.PRESET_EVICT_EVERY.items())
            + "; 1 = every stored frame, as published; more: the scoring's cost per frame divided by it, up "
            "to that many frames more attended in between)", low=0, high=MAX_EVICT_EVERY),
    _engine("cache.max_frames", "cache_max_frames",
            "Stored frames kept; older ones recycled for constant memory (0 = unbounded)", low=0, high=10**7),
    _engine("cache.backend", "cache_backend",
            "'sliding_window' storage + attention: 'auto' (contiguous on sm90+ GPUs in bf16/fp16, else "
            "flashinfer if installed, else paged_gather), contiguous (cuDNN/flash in place), "
            "flashinfer(_fa3) (paged), paged_gather, dense",
            choices=cache_options.BACKENDS),
    Setting("input.transport", "raw",
            "Subscribe to 'image' (raw) or 'image/compressed' (compressed)",
            choices=("raw", "compressed"), restart=True),
    Setting("input.qos", "sensor_data", "QoS of the image and camera_info subscriptions",
            choices=("sensor_data", "reliable", "best_effort", "system_default"), restart=True),
    Setting("input.camera_info_sync", "exact",
            "Pair images with the camera_info of the same stamp ('exact'), or with the newest ('latest', for "
            "drivers that stamp them differently)", choices=CAMERA_INFO_SYNC_MODES, restart=True),
    Setting("queue.policy", "latest",
            "'latest': keep the newest queue.size frames, drop older ones (live); "
            "'all': process every frame (bags)", choices=("latest", "all"), restart=True),
    Setting("queue.size", 2,
            "'latest': frames waiting at most; 'all': backlog that triggers a warning",
            low=1, high=1000, restart=True),
    Setting("frames.map", "map", "Map frame: the tracked frame at the first frame of the current sequence, x "
            "forward, z up", frame=True),
    Setting("frames.odom", "odom", "Odometry frame: continuous across resets (the jumps go to map -> odom)",
            frame=True),
    Setting("frames.base", "base_link",
            "Robot base frame; its camera mount comes from TF (never published here). Without one the root "
            "of the camera's TF tree is tracked", frame=True),
    Setting("frames.camera", CAMERA_FRAME_FROM_INPUT,
            f"Camera optical frame; '{CAMERA_FRAME_FROM_INPUT}' = the image header's frame_id", frame=True),
    # The robot TF tree (docs/node.md, "Frames and TF"): map -> odom -> base, the mount from TF.
    Setting("tf.publish_map_to_camera", False,
            "Publish map -> camera optical frame instead of map -> odom -> base (a camera nobody else "
            "publishes frames for)"),
    Setting("tf.publish_odom_to_base", True,
            "Publish odom -> base (frames.base, or the root of the camera's TF tree when TF does not link "
            "frames.base to the camera)"),
    Setting("tf.publish_map_to_odom", True,
            "Publish map -> odom: identity until a reset, then the jump (off when a localisation node "
            "owns it)"),
    Setting("tf.mount_timeout", 2.0,
            "Seconds to wait, once, for the base -> camera mount on TF before tracking the camera tree's "
            "root (the mount is still looked for at every frame)", low=0.0, high=600.0),
    Setting("odometry.position_stddev", 0.05,
            "Odometry pose covariance: position standard deviation (world units)", low=0.0, high=1e6),
    Setting("odometry.orientation_stddev", 0.05,
            "Odometry pose covariance: orientation standard deviation (rad)", low=0.0, high=10.0),
    Setting("odometry.linear_velocity_stddev", 0.1,
            "Odometry twist covariance: linear velocity standard deviation (world units/s)",
            low=0.0, high=1e6),
    Setting("odometry.angular_velocity_stddev", 0.1,
            "Odometry twist covariance: angular velocity standard deviation (rad/s)", low=0.0, high=100.0),
    Setting("output.qos", "reliable",
            "Reliability of the per-frame outputs (the map is always reliable, latched)",
            choices=("reliable", "best_effort"), restart=True),
    Setting("output.revisions", "ignore",
            "Window-overlap re-estimates: 'ignore', or 'republish' depth/clouds/odometry (original stamp)",
            choices=("ignore", "republish")),
    Setting("output.points.frame", "camera", "Frame of the per-frame cloud 'points': camera or map",
            choices=("camera", "map")),
    Setting("output.points.decimation", 2, "Keep every N-th pixel in both directions for the clouds",
            low=1, high=64),
    Setting("output.points.min_confidence", 1.0,
            "Drop points whose confidence is below this (confidence > 1)", low=0.0, high=1e6),
    Setting("output.depth.encoding", "32FC1",
            "Depth image: 32FC1 (NaN invalid) or 16UC1 (depth x 1000: mm once scaled; 0 invalid)",
            choices=("32FC1", "16UC1")),
    Setting("output.map.voxel_size", 0.05,
            "Voxel edge of the fused map (metres with a scale.source, else model units)",
            low=1e-4, high=100.0),
    Setting("output.map.max_points", 500_000, "Voxels kept in the fused map; the oldest are evicted",
            low=1, high=50_000_000),
    Setting("output.map.period", 1.0, "Seconds between 'map/points' publications (0 = never; save_map works)",
            low=0.0, high=3600.0),
    Setting("output.path.max_length", 1024, "Poses kept in 'path'", low=1, high=1_000_000),
    Setting("map.save_dir", ".",
            "Folder of the save_map service's map.ply and trajectory.tum ('~' expanded; strftime patterns "
            "such as ~/maps/%Y%m%d-%H%M%S give each call its own folder)"),
    _scale("scale.source", "source",
           "Metric scale from 'none' (model units), 'odometry', 'depth' (aligned depth image), "
           "'camera_height' or 'fixed'", choices=SCALE_SOURCES),
    _scale("scale.factor", "factor", "'fixed': metres per model unit", low=1e-6, high=1e6),
    _scale("scale.odometry.input", "odometry_input",
           "'odometry': 'tf' (frames.odom -> camera from TF) or 'topic' (nav_msgs/Odometry, scale/odometry)",
           choices=ODOMETRY_INPUTS),
    _scale("scale.odometry.min_motion", "odometry_min_motion",
           "'odometry': metres the camera moves between two compared increments", low=0.001, high=100.0),
    _scale("scale.odometry.max_turn_deg", "odometry_max_turn_deg",
           "'odometry': increments turning more than this are ignored", low=0.1, high=180.0),
    _scale("scale.depth.min", "depth_min", "'depth': sensor depths below this (m) are ignored",
           low=0.0, high=1000.0),
    _scale("scale.depth.max", "depth_max", "'depth': sensor depths above this (m) are ignored",
           low=0.01, high=1000.0),
    _scale("scale.camera_height.height", "camera_height",
           "'camera_height': the camera's optical centre above the floor (m)", low=0.0, high=1000.0),
    _scale("scale.camera_height.max_tilt_deg", "floor_max_tilt_deg",
           "'camera_height': largest angle between the floor normal and the camera's down axis",
           low=1.0, high=89.0),
    _scale("scale.min_confidence", "min_confidence",
           "'depth', 'camera_height': ignore model pixels less confident than this", low=0.0, high=1e6),
    _scale("scale.min_samples", "min_samples", "Samples before the first estimate (increments or frames)",
           low=1, high=10000),
    _scale("scale.window", "window", "Most recent samples the estimate is made from", low=1, high=10000),
    _scale("scale.outlier_threshold", "outlier_threshold",
           "Reject samples this many robust deviations from the median", low=1.0, high=100.0),
    _scale("scale.smoothing", "smoothing",
           "Fraction of the way the applied scale moves to each new estimate (1 = none)", low=0.01, high=1.0),
    _scale("scale.sync_tolerance", "sync_tolerance_s",
           "Largest stamp difference (s) between an image and its odometry or depth", low=0.0, high=10.0),
    Setting("diagnostics.period", 1.0, "Seconds between /diagnostics messages (0 = off)",
            low=0.0, high=3600.0),
    Setting("diagnostics.no_data_timeout", 5.0, "Warn when no image arrived for this many seconds",
            low=0.1, high=3600.0),
    Setting("diagnostics.max_drop_rate", 0.5,
            "Warn when more than this share of the images received since the last report was dropped "
            "or rejected", low=0.0, high=1.0),
)
SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def defaults() -> dict[str, Value]:
    return {s.name: s.default for s in SETTINGS}


def setting(name: str) -> Setting:
    """The setting called ``name``; the error suggests the closest names for a typo."""
    try:
        return SETTINGS_BY_NAME[name]
    except KeyError:
        close = difflib.get_close_matches(name, SETTINGS_BY_NAME, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise SettingsError(f"unknown parameter {name!r}{hint}") from None


def ros_owned(name: str) -> bool:
    """True for parameters ROS itself reads (parameter files and command lines may set them)."""
    return name in ROS_OWNED_PARAMETERS or name.startswith(ROS_OWNED_PREFIXES)


def check_names(names: Iterable[str]) -> None:
    """Refuse the first name that is neither a setting nor ROS's own (a typo must not pass silently)."""
    for name in names:
        if not ros_owned(name):
            setting(name)


def settings_error(error: ConfigError) -> SettingsError:
    """An engine configuration error as a parameter error naming the parameters it concerns."""
    return SettingsError(f"{error} [{_parameter_names_in(str(error))}]")


def check_consistency(values: Mapping[str, Value]) -> None:
    """Cross-field rules of a complete set of values: the engine's, then the node's own."""
    try:
        engine_config(values).validate()
    except ConfigError as error:
        raise settings_error(error) from None
    try:
        scale_options(values).validate()
    except ScaleOptionsError as error:
        raise SettingsError(f"{error} [{_parameter_names_in(str(error), 'scale_field')}]") from None
    if (values["scale.source"] == "odometry" and values["scale.odometry.input"] == "tf"
            and values["tf.publish_odom_to_base"]):
        raise SettingsError("scale.odometry.input=tf reads frames.odom -> camera from TF, which this node "
                            "publishes itself with tf.publish_odom_to_base: use scale.odometry.input:=topic")
    if values["tf.publish_map_to_camera"] and values["tf.publish_odom_to_base"]:
        raise SettingsError("tf.publish_map_to_camera and tf.publish_odom_to_base cannot both be true: the "
                            "camera frame would get two parents (map, and base through the robot's mount)")


def resolve(overrides: Mapping[str, object] | None = None) -> dict[str, Value]:
    """Defaults updated with ``overrides``, each checked, then checked together."""
    values = defaults()
    for name, value in (overrides or {}).items():
        values[name] = setting(name).check(value)
    check_consistency(values)
    return values


def engine_config(values: Mapping[str, Value]) -> EngineConfig:
    """The ``EngineConfig`` of a complete set of values (not validated: call ``validate()``)."""
    return EngineConfig(**{s.engine_field: values[s.name] for s in SETTINGS if s.engine_field})


def scale_options(values: Mapping[str, Value]) -> ScaleOptions:
    """The ``ScaleOptions`` of a complete set of values (not validated: call ``validate()``)."""
    return ScaleOptions(**{s.scale_field: values[s.name] for s in SETTINGS if s.scale_field})


def parse_assignment(text: str) -> tuple[str, Value]:
    """``name:=value`` as on a ``ros2 run ... -p`` command line; the value is typed by the setting."""
    name, separator, raw = text.partition(":=")
    if not separator:
        raise SettingsError(f"{text!r} is not of the form name:=value")
    target = setting(name.strip())
    raw = raw.strip()
    try:
        parsed = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        parsed = raw
    # A string parameter keeps the text as typed ('123' stays a string), unless it was quoted.
    if target.type is str and not isinstance(parsed, str):
        parsed = raw
    return target.name, target.check(parsed)


def parse_assignments(texts: Iterable[str]) -> dict[str, Value]:
    return dict(parse_assignment(text) for text in texts)


def flatten(tree: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    """Nested mappings to dotted names: ``{model: {preset: tiny}}`` -> ``{'model.preset': 'tiny'}``."""
    flat: dict[str, object] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def load_params_file(path: Path | str, node_name: str = NODE_NAME) -> dict[str, Value]:
    """Checked values of ``path`` (ROS params layout: ``<node>: {ros__parameters: {...}}``).

    Sections for ``node_name``, ``/node_name``, ``/**`` and namespaced ``/ns/node_name`` apply, in
    file order. ``use_sim_time`` and other ROS-owned names are left to ROS and ignored here.
    """
    try:
        document = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise SettingsError(f"cannot read parameters file {path}: {error}") from None
    if not isinstance(document, Mapping):
        raise SettingsError(f"{path}: expected '<node name>: {{ros__parameters: {{...}}}}' at the top level")
    values: dict[str, Value] = {}
    for key, section in document.items():
        if not _section_applies(str(key), node_name):
            continue
        if not isinstance(section, Mapping) or not isinstance(section.get("ros__parameters"), Mapping):
            raise SettingsError(f"{path}: section {key!r} has no 'ros__parameters' mapping")
        for name, value in flatten(section["ros__parameters"]).items():
            if not ros_owned(name):
                values[name] = setting(name).check(value)
    return values


def _section_applies(key: str, node_name: str) -> bool:
    return key in ("/**", node_name) or key.endswith(f"/{node_name}")


def _parameter_names_in(message: str, kind: str = "engine_field") -> str:
    """The parameter names of the fields (``engine_field`` or ``scale_field``) an options error mentions."""
    names = [s.name for s in SETTINGS if getattr(s, kind) and getattr(s, kind) in message]
    return ", ".join(names) or ("engine settings" if kind == "engine_field" else "scale settings")


def markdown_table() -> str:
    """The parameter table of the docs (``docs/node.md`` embeds it; a test keeps the two equal)."""

    def limits(entry: Setting) -> str:
        if entry.choices:
            return ", ".join(f"`{choice}`" for choice in entry.choices)
        if entry.low is None:
            return ""
        step = f", step {entry.step}" if entry.step else ""
        low, high = (int(entry.low), int(entry.high)) if entry.type is int else (entry.low, entry.high)
        return f"{low:g} .. {high:g}{step}" if entry.type is float else f"{low} .. {high}{step}"

    rows = ["| Parameter | Type | Default | Range / choices | Description |",
            "| --- | --- | --- | --- | --- |"]
    for entry in SETTINGS:
        default = str(entry.default).lower() if entry.type is bool else entry.default
        default = '""' if default == "" else default  # an empty string, not a 0
        restart = " *(restart)*" if entry.restart else ""
        rows.append(f"| `{entry.name}` | {entry.type.__name__} | `{default!s}` | {limits(entry)} | "
                    f"{entry.description.replace('|', '/')}{restart} |")
    return "\n".join(rows) + "\n"
