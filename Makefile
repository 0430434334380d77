# Two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-quick test-all lint bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned to the wheels this machine serves from disk (no 3 GB download)
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/kitchen-study demo

# every test that runs without a GPU, slow ones included (CI: .ci/run; <= 15 min on 2 cores)
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q --durations=15

# the quick loop while editing: no slow tests (real-data training, Ray clusters, kills)
test-quick: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-all: test  # kept for habit: `make test` is now everything

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)  ## every benchmark in turn (minutes to tens of minutes; figures: docs/benchmarks.md)
	for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# One prepared GPU check (issue 18, bench/gpu_check.py): <= 8 min on one H100/H200, every step
# under a hard timeout; JSON and the Markdown section for docs/benchmarks.md in gpu_check_out/.
# SMOKE=1: the same logic at tiny shapes on any machine (tests/test_gpu_check.py, in `make test`).
.PHONY: gpu-check
gpu-check: $(STAMP)
	$(PY) bench/gpu_check.py $(if $(SMOKE),--smoke) --out $(or $(OUT),gpu_check_out)
