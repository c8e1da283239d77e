# One-command set-up, tests and demo on a fresh Debian/Python 3.11 machine (no ROS install needed).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_CPU := torch==2.13.0
INTERFACES := $(wildcard interfaces/*.py interfaces/*.txt interfaces/*/package.xml interfaces/*/CMakeLists.txt \
	interfaces/*/msg/*.msg)

.PHONY: setup test lint demo soak clean

setup: $(STAMP)

# torch is pinned first: a bare `torch` requirement would pull several GB of CUDA wheels.
# Then the message packages no registry carries (tf2_msgs) are built into the venv, unless importable.
$(STAMP): setup.py package.xml $(INTERFACES)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_CPU)
	$(PY) -m pip install --quiet -e '.[ros,dev]'
	$(PY) interfaces/build.py
	touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q

demo: setup
	$(PY) -m gct_stream_ros.tools.demo --output demo_output

soak: setup
	GCT_SOAK=1 $(PY) -m pytest -q -m soak

clean:
	rm -rf $(VENV) build *.egg-info demo_output .pytest_cache .ruff_cache
