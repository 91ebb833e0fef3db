# wscore — the two commands: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck unit bench clean js js-update chromium nginx

$(STAMP): pyproject.toml
	@# the Redis-backed tests (tests/cluster) start their own redis-server: install Debian's when missing,
	@# without starting the system service (a policy-rc.d that refuses, unless one is already there)
	command -v redis-server >/dev/null || { \
	  rc=/usr/sbin/policy-rc.d; own=0; \
	  if [ ! -e $$rc ]; then printf '#!/bin/sh\nexit 101\n' > $$rc && chmod +x $$rc && own=1; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update && apt-get install -y -o DPkg::Lock::Timeout=300 --no-install-recommends redis-server; st=$$?; \
	  if [ $$own = 1 ]; then rm -f $$rc; fi; exit $$st; }
	@# the Redis-over-TLS tests make a throwaway CA with the openssl command
	command -v openssl >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openssl; }
	@# the sandbox's HTML-report test opens the report in headless Chromium (Debian's)
	command -v chromium >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## make run: set up, then serve examples/chat on ws://127.0.0.1:8080/ws
run: $(STAMP)
	@echo "wscore example chat: open http://127.0.0.1:8080/ in a browser (WebSocket ws://127.0.0.1:8080/ws)"
	@echo "try it:  $(VENV)/bin/python examples/chat/client.py ws://127.0.0.1:8080/ws --room lobby"
	$(VENV)/bin/wscore run examples.chat.app:server --host 127.0.0.1 --port 8080

## make test: set up, then ruff, mypy, the browser client's build check and the whole pytest suite
test: $(STAMP) lint typecheck js chromium nginx unit

lint: $(STAMP)
	$(VENV)/bin/ruff check wscore actors sandbox loadtests tests examples benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(PY) -m pytest -q

## make bench: bounded server figures (~1 min); WSBENCH=DIR adds fan-out (benchmarks/README.md)
bench: $(STAMP)
	$(PY) benchmarks/bench_server.py all

clean:
	rm -rf $(VENV) build *.egg-info

# -- the browser client (clients/js -> wscore/static/wscore.js) ------------------------------------
JS     := clients/js
JS_OUT := wscore/static/wscore.js

$(JS)/node_modules/.installed: $(JS)/package-lock.json
	cd $(JS) && npm ci --no-audit --no-fund
	touch $@

## make js: rebuild the browser client, run its conformance tests, fail if the shipped copy is stale
js: $(JS)/node_modules/.installed
	cd $(JS) && node build.mjs
	@cmp -s $(JS)/dist/wscore.js $(JS_OUT) || { echo "$(JS_OUT) is stale: run 'make js-update' and commit it"; exit 1; }
	cd $(JS) && node --test test/

## make js-update: rebuild the browser client into the Python package
js-update: $(JS)/node_modules/.installed
	cd $(JS) && node build.mjs --out ../../$(JS_OUT)

## make chromium: Debian's Chromium for the browser tests (tests/browser)
chromium: /usr/bin/chromium
/usr/bin/chromium:
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y chromium

## make nginx: Debian's nginx for the two-node example's test (tests/examples), without starting
## the system service (a policy-rc.d that refuses, unless one is already there)
nginx:
	command -v nginx >/dev/null || { \
	  rc=/usr/sbin/policy-rc.d; own=0; \
	  if [ ! -e $$rc ]; then printf '#!/bin/sh\nexit 101\n' > $$rc && chmod +x $$rc && own=1; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update && apt-get install -y -o DPkg::Lock::Timeout=300 --no-install-recommends nginx; st=$$?; \
	  if [ $$own = 1 ]; then rm -f $$rc; fi; exit $$st; }
