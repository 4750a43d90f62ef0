# `make demo` and `make test` each bootstrap .venv on first use.
VENV := .venv
# Most tests wait on servers and timers, so two workers halve the suite's time on 2 cores.
WORKERS ?= 2
STAMP := $(VENV)/.installed

.PHONY: demo test lint services clean wheelhouse

$(STAMP): pyproject.toml scripts/bootstrap.sh
	VENV=$(VENV) scripts/bootstrap.sh
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/patrol demo

services:
	scripts/services.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP) services lint
	PATROL_NO_SKIP=1 $(VENV)/bin/python -m pytest -n $(WORKERS) --dist worksteal --durations=25

# Every wheel a gateway needs, for a site without internet (docs/deploy.md): CPython 3.11
# (Debian 12, Raspberry Pi OS Bookworm: glibc 2.36) on 64-bit ARM and x86-64, and Patrol's own.
WHEELHOUSE := build/wheelhouse
WHEEL_ARCHS := aarch64 x86_64
WHEEL_PYTHON := 3.11
# pip does not widen --platform to older glibc versions itself: name each one up to 2.36.
MANYLINUX := $(shell seq 5 36)

wheelhouse: $(STAMP)
	rm -rf $(WHEELHOUSE) build/lib build/bdist.*
	$(VENV)/bin/pip wheel --no-deps -q -w $(WHEELHOUSE) .
	for arch in $(WHEEL_ARCHS); do \
	  $(VENV)/bin/pip download -q --only-binary=:all: \
	    --implementation cp --python-version $(WHEEL_PYTHON) \
	    $(foreach v,$(MANYLINUX),--platform manylinux_2_$(v)_$$arch) \
	    -d $(WHEELHOUSE) $(WHEELHOUSE)/facility_patrol-*.whl || exit 1; \
	done
	@echo "$(WHEELHOUSE): $$(ls $(WHEELHOUSE) | wc -l) wheels, $$(du -sh $(WHEELHOUSE) | cut -f1)"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build *.egg-info
