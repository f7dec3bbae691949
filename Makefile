# spikeff: `make demo` (set up + train the digits demo), `make test` (set up + run the tests),
# `make results` (regenerate every results/*.json and figure from the current recipes; hours).
PY ?= .venv/bin/python
.PHONY: setup demo test results clean
setup: .venv/.installed
.venv/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@
demo: setup
	.venv/bin/spikeff demo --out runs/demo
test: setup
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo 'make test: pytest collected no tests'; fi; exit $$rc
results: setup
	$(PY) experiments/run_all.py
clean:
	rm -rf .venv runs
