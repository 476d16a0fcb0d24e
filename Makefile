# One-command entry points (see README). Everything runs inside .venv, created on first use.
PYTHON ?= python3
VENV ?= .venv
PIP_INSTALL = $(VENV)/bin/pip install --no-cache-dir torch==2.14.1 torchvision==0.29.1 -e '.[test]'

.PHONY: install test test-all demo clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL)
	touch $@

# Fast suite (slow learning tests excluded), offline as in CI.
test: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -q

# Everything, including the slow learning tests (several minutes on 2 CPU cores).
test-all: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -q -m ''

# The main job on the bundled example.
demo: install
	bash examples/demo.sh

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
