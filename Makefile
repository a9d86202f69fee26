# The two commands of the README:
#   make demo   — set up and run the demo district on the embedded default store
#   make test   — set up and pass the tests (both storage backends, the browser test)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
FRONTEND := cityops/web/frontend
# The built web app (Vite): index.html, phone.html (the phone command room, inlined), content-hashed assets, the
# service worker, the API reference assets.
WEBAPP := cityops/web/dist/index.html
FRONTEND_SOURCES := $(shell find $(FRONTEND)/src $(FRONTEND)/public -type f 2>/dev/null) \
	$(FRONTEND)/index.html $(FRONTEND)/phone.html $(FRONTEND)/vite.config.js $(FRONTEND)/vite.phone.config.js \
	cityops/web/messages.json

.PHONY: setup assets demo test system-deps bench bench-web clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[demo,test]"
	touch $(STAMP)

setup: $(STAMP) assets

$(FRONTEND)/node_modules/.package-lock.json: $(FRONTEND)/package-lock.json
	cd $(FRONTEND) && npm ci --no-audit --no-fund --loglevel=error

$(WEBAPP): $(FRONTEND)/node_modules/.package-lock.json $(FRONTEND_SOURCES)
	cd $(FRONTEND) && npm run --silent build

assets: $(WEBAPP)

demo: setup
	$(BIN)/cityops demo $(DEMO_ARGS)

# PostGIS and Chromium come from Debian (root, as on the CI machine).
system-deps:
	scripts/install-system-deps.sh

# The browser-side logic (offline queue, i18n catalogue, formatting) with Vitest, then everything else with pytest.
test: system-deps setup
	cd $(FRONTEND) && npm test --silent
	$(BIN)/pytest $(PYTEST_ARGS)

# Every benchmark at the demo scale, each beside its peer or raw limit, one table (QUICK=1: a smaller smoke run).
bench: setup
	$(BIN)/python benchmarks/run_all.py $(if $(QUICK),--quick) $(BENCH_ARGS)

# First paint on a throttled "Fast 3G" network and map frame rate with every live layer on (headless Chromium).
bench-web: setup
	$(BIN)/python benchmarks/web.py

clean:
	rm -rf $(VENV) $(FRONTEND)/node_modules cityops/web/dist
