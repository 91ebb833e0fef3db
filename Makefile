# wscore — the two commands: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## make run: set up, then serve examples/chat on ws://127.0.0.1:8080/ws
run: $(STAMP)
	@echo "wscore example chat on ws://127.0.0.1:8080/ws  (health: http://127.0.0.1:8080/healthz)"
	@echo "try it:  $(VENV)/bin/python examples/chat/client.py ws://127.0.0.1:8080/ws --room lobby"
	$(VENV)/bin/wscore run examples.chat.app:server --host 127.0.0.1 --port 8080

## make test: set up, then ruff, mypy and the whole pytest suite
test: $(STAMP) lint typecheck unit

lint: $(STAMP)
	$(VENV)/bin/ruff check wscore actors sandbox loadtests tests examples benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bench_server.py

clean:
	rm -rf $(VENV) build *.egg-info
