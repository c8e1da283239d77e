"""Start the GCT streaming node, optionally with RViz2.

    ros2 launch gct_stream_ros gct_stream.launch.py image_topic:=/camera/color/image_raw rviz:=true

Parameters come from ``params_file`` (every node parameter with its default); the ``checkpoint``,
``preset``, ``device`` and ``transport`` arguments override it only when given, so an empty
argument never hides a value of the file.
"""

from pathlib import Path

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch_ros.actions import Node

from launch import LaunchDescription

# share/gct_stream_ros when installed, the package source tree when run from a checkout.
SHARE = Path(__file__).resolve().parent.parent
DEFAULT_PARAMS = str(SHARE / "config" / "gct_stream.yaml")
RVIZ_CONFIG = str(SHARE / "config" / "gct_stream.rviz")

ARGUMENTS = (
    ("checkpoint", "", "Model weights: a .pt/.pth/.safetensors path or 'hf' (Hugging Face download); "
                       "empty keeps the params file's value (random weights with preset:=tiny)"),
    ("preset", "", "Network preset, 'lingbot-map' or 'tiny' (random weights, for smoke tests); empty keeps "
                   "the params file's value"),
    ("device", "", "'auto', 'cpu', 'cuda' or 'cuda:N'; empty keeps the params file's value"),
    ("image_topic", "/camera/image_raw", "Camera image topic, remapped onto the node's 'image' input "
                                         "(and '<image_topic>/compressed' onto 'image/compressed')"),
    ("camera_info_topic", "", "CameraInfo topic; empty means '<namespace of image_topic>/camera_info'"),
    ("transport", "", "Image transport to subscribe, 'raw' or 'compressed'; empty keeps the params file's "
                      "value"),
    ("params_file", DEFAULT_PARAMS, "ROS parameters YAML of the node"),
    ("namespace", "", "Namespace of the node and of its relative topics"),
    ("use_sim_time", "false", "Follow /clock (true when replaying a bag with --clock)"),
    ("rviz", "false", "Also start RViz2 with the package's gct_stream.rviz"),
    ("log_level", "info", "Log level of the node: debug, info, warn, error or fatal"),
)
# Launch arguments that set a node parameter when not empty.
PARAMETER_OVERRIDES = {"checkpoint": "model.checkpoint", "preset": "model.preset", "device": "model.device",
                       "transport": "input.transport"}
TRUE_WORDS = ("true", "1", "yes", "on")


def camera_info_topic(image_topic: str, given: str) -> str:
    """``given``, or the camera_info next to the image, as image_pipeline derives it."""
    if given:
        return given
    namespace, separator, _ = image_topic.rstrip("/").rpartition("/")
    return f"{namespace}{separator}camera_info"


def node_actions(context, *args, **kwargs):
    """Build the nodes from the resolved argument values (plain strings)."""
    value = dict(context.launch_configurations)
    use_sim_time = value["use_sim_time"].lower() in TRUE_WORDS
    overrides = {parameter: value[argument] for argument, parameter in PARAMETER_OVERRIDES.items()
                 if value[argument]}
    if value["preset"] == "tiny" and not value["checkpoint"]:
        overrides["model.checkpoint"] = ""  # the tiny preset has no published weights: random ones
    overrides["use_sim_time"] = use_sim_time
    image_topic = value["image_topic"]
    actions = [Node(
        package="gct_stream_ros",
        executable="gct_stream_node",
        name="gct_stream_node",
        namespace=value["namespace"],
        output="screen",
        parameters=[value["params_file"], overrides],
        remappings=[
            ("image", image_topic),
            ("image/compressed", f"{image_topic}/compressed"),
            ("camera_info", camera_info_topic(image_topic, value["camera_info_topic"])),
        ],
        ros_arguments=["--log-level", value["log_level"]],
    )]
    if value["rviz"].lower() in TRUE_WORDS:
        actions.append(Node(package="rviz2", executable="rviz2", name="rviz2", namespace=value["namespace"],
                            arguments=["-d", RVIZ_CONFIG], parameters=[{"use_sim_time": use_sim_time}]))
    return actions


def generate_launch_description():
    declared = [DeclareLaunchArgument(name, default_value=default, description=description)
                for name, default, description in ARGUMENTS]
    return LaunchDescription([*declared, OpaqueFunction(function=node_actions)])
