# Two commands on a fresh machine: `make demo`, `make test` (and `make test-fast`).
# Each first creates .venv/ with the tested CPU stack (.ci/install-cpu, README "Install and test") when it
# is missing or stale: stale = pyproject.toml or .ci/install-cpu changed since it was built (their
# hash is the stamp file's name). USE_VENV=DIR runs in an existing environment as it is instead.
#
#   make demo [DEMO_DIR=vineppo-demo] [ARGS="--seeds 3 iterations=30"]
#   make test          # the whole suite, strict: a skip or "no tests collected" is a failure
#   make test-fast     # the fast tier: -m "not slow"
#   make test PYTEST_ARGS="-x -k demo"   # extra pytest arguments
#   make mutation [MODULE=vineppo/advantages.py] [MUTATION_ARGS=--survivors]   # mutation scores
#                      # (docs/testing-mutation.md; not in CI)
#   make gpu-wheels    # benchmarks/.gpu_wheels/: what benchmarks/gpu_check.py installs on a GPU machine
#                      # with no network (docs/gpu-check.md)

PYTHON   ?= python3
DEMO_DIR ?= vineppo-demo
ARGS     ?=
PYTEST_ARGS ?=
MODULE   ?=
MUTATION_ARGS ?=

ifdef USE_VENV
VENV  := $(USE_VENV)
READY :=
else
VENV  ?= .venv
INSTALL_HASH := $(shell $(PYTHON) -c "import hashlib; print(hashlib.sha256(open('pyproject.toml','rb').read() + open('.ci/install-cpu','rb').read()).hexdigest()[:16])")
READY := $(VENV)/.vineppo-installed-$(INSTALL_HASH)
endif
PY := $(VENV)/bin/python

.PHONY: demo test test-fast mutation venv clean-venv gpu-wheels

venv: $(READY)

$(VENV)/.vineppo-installed-%:
	@echo "make: building $(VENV) with the tested CPU stack (.ci/install-cpu; a few minutes)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	rm -f $(VENV)/.vineppo-installed-*
	. $(VENV)/bin/activate && ./.ci/install-cpu
	touch $@

demo: $(READY)
	$(PY) -m vineppo demo --output-dir $(DEMO_DIR) $(ARGS)

# pytest exits 5 when it collected no tests: a failure here, never a green run
define PYTEST
	VINEPPO_TEST_STRICT=1 $(PY) -m pytest -q $(1) $(PYTEST_ARGS) tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make: pytest collected no tests (exit 5): failure"; exit 1; fi; exit $$rc
endef

test: $(READY)
	$(call PYTEST,)

test-fast: $(READY)
	$(call PYTEST,-m "not slow")

# tests/mutation.py links ./shared (the tests in ./mutants find ../shared/data through it) and builds
# the tiny test model once for every mutant
mutation: $(READY)
	$(PY) tests/mutation.py $(MUTATION_ARGS) $(MODULE)

clean-venv:
	rm -rf .venv

gpu-wheels:
	PYTHON=$(PYTHON) benchmarks/gpu_wheels.sh
