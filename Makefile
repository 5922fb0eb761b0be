# recstream: `make demo` and `make test` each install what they need into .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install lint test test-fast demo bench-stream bench-quality clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first, pinned, so nothing below can pull a multi-GB CUDA wheel.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	# The C++ kernels (GRU recurrence, DIN attention, gather, Dice, dropout), built once here
	# (~60 s) rather than in the first training run.
	$(PY) -m models.modules._native
	touch $(STAMP)

# Prometheus and promtool (Debian's package) for the stack and the tests of its rules. Where
# apt-get cannot run (not root, not Debian) the stack runs without it and those tests skip.
PROM_STAMP := $(VENV)/.prometheus
$(PROM_STAMP): | $(STAMP)
	@command -v promtool >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { $(APT_PROM) || { apt-get update -q && $(APT_PROM); }; }; } || \
	  echo "warning: prometheus not installed: the stack runs without it, its tests skip"
	touch $@
APT_PROM = DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus

install: $(STAMP) $(PROM_STAMP)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest -q --timeout=600 --durations=15

demo: install
	$(VENV)/bin/recstream demo

bench-stream: install
	$(VENV)/bin/recstream bench stream --processes 2 --json bench/results/stream.json

# The peer library is installed without its dependencies (it would pull another torch).
bench-quality: install
	$(PY) -m pip install -q --no-deps deepctr-torch==0.3.0
	$(VENV)/bin/recstream bench quality --trials 2 --max-epochs 2 --jobs 2 --threads 1 \
	  --json bench/results/quality_ml100k_tuned.json

clean:
	rm -rf $(VENV) .recstream .pytest_cache .mypy_cache .ruff_cache
