# The two commands of the README:
#   make demo   — set up and run the demo district on the embedded default store
#   make test   — set up and pass the tests (both storage backends, the browser test)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
VENDOR := cityops/web/static/vendor/maplibre-gl.mjs

.PHONY: setup assets demo test system-deps bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[demo,test]"
	touch $(STAMP)

setup: $(STAMP) assets

$(VENDOR): cityops/web/frontend/package-lock.json cityops/web/frontend/vendor.mjs
	cd cityops/web/frontend && npm ci --no-audit --no-fund --loglevel=error && npm run --silent vendor

assets: $(VENDOR)

demo: setup
	$(BIN)/cityops demo $(DEMO_ARGS)

# PostGIS and Chromium come from Debian (root, as on the CI machine).
system-deps:
	scripts/install-system-deps.sh

test: system-deps setup
	$(BIN)/pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python benchmarks/locate.py

clean:
	rm -rf $(VENV) cityops/web/frontend/node_modules cityops/web/static/vendor
