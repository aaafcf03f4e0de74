# The two commands: `make quickstart` and `make test`. Both set themselves up on a fresh machine.
PY := .cache/venv/bin/python
export HF_HUB_OFFLINE := 1
export AXOLOTL_DO_NOT_TRACK := 1
export WANDB_MODE ?= disabled
# Training prints one progress line per logging step (common/train_progress.py), so tqdm's redrawn
# bars stay off; RECIPES_VERBOSE=1 (or ARGS=--verbose) shows every library message.
export TQDM_DISABLE ?= 1

.PHONY: setup quickstart results test clean
setup:
	bash scripts/setup.sh

quickstart: setup
	$(PY) -m scripts.quickstart $(ARGS)

results: setup
	$(PY) -m scripts.results $(ARGS)

test: setup
	$(PY) -m pytest $(ARGS)

clean:
	rm -rf outputs last_run_prepared
