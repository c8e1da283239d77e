"""Compiled regions that share one method: a copy of its code object per region.

Dynamo keeps its compiled entries per code object and checks them one by one at every call:
the aggregator's layer segments and the camera head's segments each run the same method for
many layers, so one shared code object (25 layers x 2 step shapes) cost ~160 us of guard checks
per call on an H200. A copy of the code per region gives each its own, single-entry cache.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable

import torch


def compiled_copies(method: types.MethodType, count: int, **options: object) -> list[Callable]:
    """``torch.compile(partial(method, i))`` for ``i < count``, each over its own copy of the code."""
    return [torch.compile(functools.partial(_own_code(method, index), index), **options)
            for index in range(count)]


def _own_code(method: types.MethodType, index: int) -> types.MethodType:
    """``method`` bound to the same object, running a copy of its code object (a distinct dynamo cache)."""
    function = method.__func__
    code = function.__code__.replace(co_name=f"{function.__name__}_{index}")
    copy = types.FunctionType(code, function.__globals__, code.co_name, function.__defaults__,
                              function.__closure__)
    return types.MethodType(copy, method.__self__)
