# FixTalk Studio: install, test, demo, benchmarks and the shipped default model.
#
#   make demo           install, then render examples/manifest.csv into out/ (CHECKPOINT=..., SET="key=value ..." optional)
#   make test           install, then run the test suite (what .ci/run does)
#   make install        .venv with everything (apt packages when missing); fast when done before
#   make bench          render speed and pipeline throughput benchmarks
#   make train-default  train the shipped default model (about 75 min on a 2-core CPU)
#   make eval-default   evaluate the default model on held-out synthetic clips (adapted to the held-out portrait first)
#
# torch stays 2.13.0 CPU (requirements/constraints.txt); whisperx goes in with --no-deps and its
# torchaudio's CUDA-built .so files are removed (shared research notes: packages.md).
# --no-compile: Python compiles a module's bytecode when it is first imported, instead of pip
# compiling all of the 22,000 files it installs (about 1.5 of a fresh install's 3.3 minutes).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS := requirements/constraints.txt
REQS := requirements/base.txt requirements/speech.txt requirements/nodeps.txt $(CONSTRAINTS) pyproject.toml
STAMP := $(VENV)/.fixtalk-installed
OUT ?= out
CHECKPOINT ?=
DEMO_MANIFEST ?= examples/manifest.csv

# Debian packages the stages and tests call: ffmpeg/ffprobe (all media), espeak-ng (TTS, test
# speech), pocketsphinx-testdata (LibriVox speech for tests and training data); chromium only
# renders the HTML report in its test (skipped without it).
APT_REQUIRED := ffmpeg espeak-ng pocketsphinx-testdata
APT_OPTIONAL := chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

DEFAULT_MODEL := fixtalk/weights/default.pt
TRAIN_DATA := runs/default/data
TRAIN_RUN := runs/default/train

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: help install apt test test-cluster demo bench train-default eval-default clean-venv

help:
	@sed -n '2,9p' Makefile | sed 's/^# \{0,1\}//'

install: apt $(STAMP)

# apt: install only what is missing (no apt-get at all when everything is there).
apt:
	@missing=""; \
	command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || missing="$$missing ffmpeg"; \
	command -v espeak-ng >/dev/null || missing="$$missing espeak-ng"; \
	[ -d /usr/share/pocketsphinx/test/data/librivox ] || missing="$$missing pocketsphinx-testdata"; \
	$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	optional=""; \
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null || optional="chromium"; \
	if [ -z "$$missing$$optional" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
	  echo "missing system packages:$$missing $$optional (install them with your package manager)" >&2; \
	  [ -z "$$missing" ]; exit $$?; fi; \
	echo "apt: installing$$missing $$optional"; \
	$(SUDO) apt-get update -qq; \
	if [ -n "$$missing" ]; then \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; fi; \
	if [ -n "$$optional" ]; then \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$optional \
	    || echo "warning: chromium not installed; the report's browser test will be skipped" >&2; fi

$(STAMP): $(REQS)
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --no-compile -c $(CONSTRAINTS) -r requirements/base.txt -r requirements/speech.txt
	$(PIP) install -q --no-compile -c $(CONSTRAINTS) --no-deps -r requirements/nodeps.txt
	rm -f $(VENV)/lib/python3*/site-packages/torchaudio/lib/*.so
	$(PIP) install -q --no-deps -e .
	@$(PY) -c 'import torch; assert torch.__version__.startswith("2.13.0"), torch.__version__; print("torch", torch.__version__)'
	@touch $@
	@echo "installed into $(VENV)"

test: install
	$(PY) -m pytest -q tests

# a two-node Ray cluster on this machine, a driver outside both (also part of make test)
test-cluster: install
	$(PY) -m pytest -q tests/test_cluster.py

demo: install
	@if [ -z "$(CHECKPOINT)" ] && [ ! -f $(DEFAULT_MODEL) ]; then \
	  echo "no $(DEFAULT_MODEL): train it with 'make train-default', or give one: make demo CHECKPOINT=model.pt" >&2; \
	  exit 1; fi
	@rc=0; $(VENV)/bin/fixtalk run $(DEMO_MANIFEST) --out $(OUT) $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT)) \
	  $(foreach s,$(SET),--set $(s)) \
	  || rc=$$?; \
	echo; echo "clips:   $(OUT)/clips/<clip_id>.mp4 (+ .srt/.vtt subtitles)"; \
	echo "results: $(OUT)/results.parquet and $(OUT)/run.json"; \
	echo "report:  $(OUT)/report.html"; \
	ls -1 $(OUT)/clips/*.mp4 2>/dev/null | sed 's/^/  /' || true; \
	exit $$rc

bench: install
	$(PY) benchmarks/render.py
	$(PY) benchmarks/stitching.py
	$(PY) benchmarks/pipeline.py
	$(PY) benchmarks/dub.py
	$(PY) benchmarks/footage_fit.py

$(TRAIN_DATA)/eval_0004/meta.json: | $(STAMP)
	$(VENV)/bin/fixtalk data synthetic $(TRAIN_DATA) --clips 40 --eval-clips 5

train-default: install $(TRAIN_DATA)/eval_0004/meta.json
	$(VENV)/bin/fixtalk train --config configs/train_default.yaml --data $(TRAIN_DATA) --out $(TRAIN_RUN)
	cp $(TRAIN_RUN)/model.pt $(DEFAULT_MODEL)
	@echo "default model: $(DEFAULT_MODEL)"

eval-default: install $(TRAIN_DATA)/eval_0004/meta.json
	$(VENV)/bin/fixtalk eval --checkpoint $(DEFAULT_MODEL) --data $(TRAIN_DATA) --adapt

clean-venv:
	rm -rf $(VENV)
