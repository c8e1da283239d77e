"""Declares every ``settings`` parameter on the node and keeps them valid, at start-up and on
``ros2 param set``.

Descriptors carry the description, the range and the choices, so ``ros2 param describe`` shows
them. Start-up parameters are read-only (ROS refuses to change them and says so); the others
are checked by the same rules as at start-up, cross-field ones included, and a refused change
comes back with the reason. An override (``-p``, parameter file) naming no parameter of the
node is refused with the offline tool's message and suggestions: a typo must not start the node
with the default.
"""

from __future__ import annotations

from collections.abc import Callable

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter

from gct_stream_ros.settings import (
    SETTINGS,
    Setting,
    SettingsError,
    Value,
    check_consistency,
    check_names,
    setting,
)


def descriptor(entry: Setting) -> ParameterDescriptor:
    """The ROS descriptor of a setting (floats accept integers too, as YAML writes ``1`` for ``1.0``)."""
    description = entry.description + (" [restart required]" if entry.restart else "")
    result = ParameterDescriptor(name=entry.name, description=description, read_only=entry.restart,
                                 dynamic_typing=entry.type is float)
    if entry.choices:
        result.additional_constraints = f"one of: {', '.join(entry.choices)}"
    if entry.type is int and entry.low is not None and entry.high is not None:
        result.integer_range = [IntegerRange(from_value=int(entry.low), to_value=int(entry.high),
                                             step=entry.step or 1)]
    elif entry.type is float and entry.low is not None and entry.high is not None:
        result.floating_point_range = [FloatingPointRange(from_value=entry.low, to_value=entry.high,
                                                          step=0.0)]
    return result


NODE_OPTIONS = {"automatically_declare_parameters_from_overrides": True}
"""The ``Node`` options ``NodeParameters`` needs: every override (command line, parameter files, the
constructor's ``parameter_overrides``) is declared as given, so its name can be checked. rclpy has no
public accessor of the overrides themselves; an undeclared one would be ignored without a word."""


class NodeParameters:
    """The node's current, valid parameter values (``values``), updated when a change is accepted.

    ``node`` must have been made with ``NODE_OPTIONS``.
    """

    def __init__(self, node: Node, on_change: Callable[[dict[str, Value]], None] | None = None) -> None:
        self._node = node
        self._on_change = on_change
        check_names(node.list_parameters([], 0).names)
        values: dict[str, Value] = {}
        for entry in SETTINGS:
            if node.has_parameter(entry.name):
                # Declared from its override without a descriptor: declared again with it, and the
                # override, which rclpy keeps, is read and checked by the descriptor.
                node.undeclare_parameter(entry.name)
            try:
                parameter = node.declare_parameter(entry.name, entry.default, descriptor(entry))
            except ParameterException as error:  # an override out of the declared range or of the wrong type
                raise SettingsError(f"{entry.name}: {error}") from None
            values[entry.name] = entry.check(parameter.value)
        check_consistency(values)
        self.values = values
        node.add_on_set_parameters_callback(self._check_change)
        node.add_post_set_parameters_callback(self._apply_change)

    def _candidate(self, parameters: list[Parameter]) -> dict[str, Value]:
        candidate = dict(self.values)
        for parameter in parameters:
            if parameter.name in candidate:
                candidate[parameter.name] = setting(parameter.name).check(parameter.value)
        check_consistency(candidate)
        return candidate

    def _check_change(self, parameters: list[Parameter]) -> SetParametersResult:
        try:
            self._candidate(parameters)
        except SettingsError as error:
            return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)

    def _apply_change(self, parameters: list[Parameter]) -> None:
        self.values = self._candidate(parameters)
        if self._on_change is not None:
            self._on_change(self.values)
