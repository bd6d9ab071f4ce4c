# numpyro_fsdiff: `make demo` and `make test` are all a new user needs.
VENV      := .venv
PY        := $(VENV)/bin/python
PYTHON    ?= $(shell tools/find-python.sh)
SHARED    := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED)),)
export FSDIFF_DATA ?= $(SHARED)
endif
export MPLBACKEND := Agg
export NO_MKDOCS_2_WARNING := 1

.PHONY: demo test test-slow docs bench clean

# The venv is rebuilt when missing, when its Python is too old, or when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml tools/find-python.sh
	@if [ -z "$(PYTHON)" ]; then exit 1; fi
	@if [ ! -x $(PY) ] || ! $(PY) -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then \
		rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/fsdiff demo --out demo_out

# Two pytest workers: XLA compiles on one thread, so one process leaves a core idle much
# of the time; loadscope keeps a module's fixtures in one worker.
test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -m "not slow" -n 2 --dist loadscope --durations=10
	$(VENV)/bin/mkdocs build --strict --site-dir .site

test-slow: $(VENV)/.installed
	$(PY) -m pytest -q -m slow

docs: $(VENV)/.installed
	$(VENV)/bin/mkdocs serve

bench: $(VENV)/.installed
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .site demo_out .pytest_cache
