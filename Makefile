# kd-metaopt: two entry points.
#   make book   create .venv if missing, install, execute every notebook with papermill at PROFILE (quick) into
#               its executed copy book/NN_name.ipynb, then `jupyter-book build book/` (HTML in book/_build/html)
#   make test   create .venv if missing, install, run the whole test suite (unit tests, nbval, smoke book)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= quick
DEVICE ?= cpu
STAMP := $(VENV)/.kdlib-installed
# real data: $KDLIB_DATA if set, else ../shared/data when it is there (this project's verified copies)
KDLIB_DATA ?= $(if $(wildcard ../shared/data/README.md),$(abspath ../shared/data),)
export KDLIB_DATA
KDLIB_CACHE ?= $(abspath .kdlib/cache)
export KDLIB_CACHE

.PHONY: book test install clean-book bench

$(PY):
	$(PYTHON) -m venv $(VENV)

# reinstall only when the packaging changes
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[test,book]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (kdlib)" >/dev/null
	touch $(STAMP)

install: $(STAMP)

# the summary page tabulates the benchmark's JSON (quick mode unless PROFILE=paper)
BENCH_FLAGS := $(if $(filter paper,$(PROFILE)),,--quick)

book: $(STAMP)
	$(PY) -m benchmarks.run $(BENCH_FLAGS) --device $(DEVICE) --out results/$(PROFILE)/benchmark.json >/dev/null
	$(PY) tools/build_book.py --profile $(PROFILE) --device $(DEVICE)

# the smoke book: `jupyter-book build book/` as a new user types it, executing every page from its source at
# the smoke profile (executed copies left in book/ by `make book` are ignored), warnings as errors, into its own
# output folder so that book/_build (and its cache) stays the user's book
SMOKE_BOOK := $(abspath .kdlib/book-smoke)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider
	$(PY) -m benchmarks.run --quick --out results/smoke/benchmark.json >/dev/null
	KDLIB_PROFILE=smoke KDBOOK_IGNORE_EXECUTED=1 OMP_NUM_THREADS=1 \
	  $(VENV)/bin/jupyter-book build book/ --path-output $(SMOKE_BOOK) -W -n --keep-going

bench: $(STAMP)
	$(PY) -m benchmarks.run --device $(DEVICE) --out results/benchmark-$(DEVICE).json

# removes the built HTML, the jupyter-cache and the executed copies: the next build executes the sources again
clean-book:
	rm -rf book/_build book/*.ipynb book/_generated $(SMOKE_BOOK)
