"""The node's parameters as typed, frozen options, built from the settings table's values.

Each group holds the parameters under one prefix (``frames.map`` -> ``FrameNames.map``,
``output.points.decimation`` -> ``OutputOptions.points_decimation``); the engine's parameters
become ``EngineConfig`` through ``settings.engine_config``, the ``scale.*`` ones
``ScaleOptions`` through ``settings.scale_options``. A parameter added to the table
under a prefix needs its field here: building the options fails until it has one. The node
rebuilds its ``NodeOptions`` whenever a parameter change is accepted; the offline tool builds
them once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from gct_stream_ros.ros.odometry import OdometryCovariance
from gct_stream_ros.settings import CAMERA_FRAME_FROM_INPUT, Value, engine_config, scale_options
from gct_stream_ros.stream.config import EngineConfig
from gct_stream_ros.stream.scale.options import ScaleOptions

Group = TypeVar("Group")


def _group(cls: type[Group], values: Mapping[str, Value], prefix: str) -> Group:
    """``cls`` built from the values named ``prefix.<field>`` (dots after the prefix become underscores)."""
    return cls(**{name[len(prefix):].replace(".", "_"): value for name, value in values.items()
                  if name.startswith(prefix)})


@dataclass(frozen=True)
class FrameNames:
    """``frames.*``: the TF frame names."""

    map: str
    odom: str
    base: str
    camera: str
    """``CAMERA_FRAME_FROM_INPUT`` ('auto'): the image header's frame_id."""

    @property
    def camera_override(self) -> str:
        """The camera frame the user named; '' when it comes from the input message."""
        return "" if self.camera == CAMERA_FRAME_FROM_INPUT else self.camera


@dataclass(frozen=True)
class TfOptions:
    """``tf.*``: which transforms go on ``/tf``, and so which frame is the world of the outputs."""

    publish_map_to_camera: bool
    publish_odom_to_base: bool
    publish_map_to_odom: bool
    mount_timeout: float


@dataclass(frozen=True)
class InputOptions:
    """``input.*``: how images are subscribed."""

    transport: str
    qos: str
    camera_info_sync: str


@dataclass(frozen=True)
class QueueOptions:
    """``queue.*``: the worker's queue."""

    policy: str
    size: int


@dataclass(frozen=True)
class OutputOptions:
    """``output.*``: what the per-frame outputs and the fused map look like."""

    qos: str
    revisions: str
    points_frame: str
    points_decimation: int
    points_min_confidence: float
    depth_encoding: str
    map_voxel_size: float
    map_max_points: int
    map_period: float
    path_max_length: int


@dataclass(frozen=True)
class MapFileOptions:
    """``map.*``: where ``save_map`` writes."""

    save_dir: str


@dataclass(frozen=True)
class DiagnosticsOptions:
    """``diagnostics.*``."""

    period: float
    no_data_timeout: float
    max_drop_rate: float


@dataclass(frozen=True)
class NodeOptions:
    """Every parameter of the node, typed."""

    engine: EngineConfig
    frames: FrameNames
    tf: TfOptions
    input: InputOptions
    queue: QueueOptions
    output: OutputOptions
    map_files: MapFileOptions
    diagnostics: DiagnosticsOptions
    odometry: OdometryCovariance
    scale: ScaleOptions

    @classmethod
    def from_values(cls, values: Mapping[str, Value]) -> NodeOptions:
        """The options of a complete, checked set of values (``settings.resolve`` or the node's)."""
        return cls(engine=engine_config(values),
                   frames=_group(FrameNames, values, "frames."),
                   tf=_group(TfOptions, values, "tf."),
                   input=_group(InputOptions, values, "input."),
                   queue=_group(QueueOptions, values, "queue."),
                   output=_group(OutputOptions, values, "output."),
                   map_files=_group(MapFileOptions, values, "map."),
                   diagnostics=_group(DiagnosticsOptions, values, "diagnostics."),
                   odometry=_group(OdometryCovariance, values, "odometry."),
                   scale=scale_options(values))

    @property
    def publishes_map(self) -> bool:
        """True when ``map`` is on TF (or nothing is on TF): map-side outputs are in ``map``, else in odom."""
        tf = self.tf
        return tf.publish_map_to_camera or tf.publish_map_to_odom or not tf.publish_odom_to_base

    @property
    def hears_tf(self) -> bool:
        """True when something needs ``/tf`` besides ``/tf_static`` (docs/node.md, "What the node hears on
        TF"): the mount lookup and the robot's tree (odom -> base), a localisation node's map -> odom
        (which ``tf_tree.py`` must know to hold ours back), odometry as the scale source. The camera-only
        tree alone needs only ``/tf_static``, where camera drivers publish their frames."""
        tf = self.tf
        return tf.publish_odom_to_base or tf.publish_map_to_odom or self.scale.source == "odometry"

    @property
    def world_frame(self) -> str:
        """The frame of path, fused map and map-frame clouds (docs/node.md, "Frames and TF")."""
        return self.frames.map if self.publishes_map else self.frames.odom

    @property
    def odometry_frame(self) -> str:
        """The frame of ``odometry``: odom when we publish odom -> base, map otherwise."""
        return self.frames.odom if self.tf.publish_odom_to_base else self.frames.map
