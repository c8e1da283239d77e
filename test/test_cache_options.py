"""The cache's choices are named once, in a module the parameter table can import without torch."""

from __future__ import annotations

import subprocess
import sys

from gct_stream_ros.cache import options
from gct_stream_ros.cache.policies.policy import PRESETS
from gct_stream_ros.settings import setting


def test_the_parameters_offer_the_cache_s_own_names():
    assert setting("cache.backend").choices == options.BACKENDS
    assert setting("cache.policy").choices == options.POLICY_PRESETS


def test_every_policy_name_has_a_preset():
    assert tuple(PRESETS) == options.POLICY_PRESETS


def test_every_budgeted_preset_evicts_at_its_named_cadence():
    budgeted = [name for name in options.POLICY_PRESETS if name != "sliding_window"]
    assert list(options.PRESET_EVICT_EVERY) == budgeted
    assert [PRESETS[name].evict_every for name in budgeted] == [options.PRESET_EVICT_EVERY[name]
                                                                for name in budgeted] == [1, 2]
    assert "evict3r 1, infinitevggt 2" in setting("cache.evict_every").description


def test_the_parameter_table_loads_without_torch():
    # Tools that only read parameters (the config generator, parameter checks) must not pay for torch.
    code = "import sys, gct_stream_ros.settings; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
