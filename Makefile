# The two commands a newcomer needs: `make run` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,ray]'
	touch $(STAMP)

run: setup
	$(VENV)/bin/noisebench run

test: setup
	$(PY) -m pytest -q

# The inner loop: without the full-size runs (slow) and the headless-browser checks.
test-fast: setup
	$(PY) -m pytest -q -m "not slow and not browser"

lint: setup
	$(VENV)/bin/ruff check noisebench tests bench examples
	$(VENV)/bin/ruff format --check noisebench tests bench examples

bench: setup
	$(PY) bench/throughput.py --json bench/throughput.json

clean:
	rm -rf $(VENV) runs .pytest_cache
