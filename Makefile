# One-command entry points (see README). Everything runs inside .venv, created on first use.
PYTHON ?= python3
VENV ?= .venv
PIP_INSTALL = $(VENV)/bin/pip install --no-cache-dir torch==2.14.1 torchvision==0.29.1 -e '.[test]'

.PHONY: install test test-all demo parity parity-paths clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL)
	touch $@

# Fast suite (slow learning tests excluded), offline as in CI.
test: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -q

# Everything, including the slow learning tests (~12 minutes on 2 CPU cores).
test-all: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -q -m ''

# The main job on the bundled example.
demo: install
	bash examples/demo.sh

# avseg side by side with the official OV-AVSS code (not part of CI; README "Parity with the official code"):
#   make parity OFFICIAL=path/to/ovavss DETECTRON2=path/to/detectron2   (two git checkouts)
parity: parity-paths $(VENV)/.parity
	AVSEG_PARITY_REQUIRED=1 AVSEG_OFFICIAL_REPO=$(OFFICIAL) PYTHONPATH=$(DETECTRON2) $(VENV)/bin/python -m pytest -q -rs tests/test_official_parity.py tests/test_official_parity_training.py

parity-paths:
	@test -n "$(OFFICIAL)" -a -n "$(DETECTRON2)" || { echo "usage: make parity OFFICIAL=path/to/ovavss DETECTRON2=path/to/detectron2"; exit 2; }

$(VENV)/.parity: $(VENV)/.installed pyproject.toml
	$(VENV)/bin/pip install --no-cache-dir torch==2.14.1 torchvision==0.29.1 -e '.[test,parity]'
	touch $@

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
