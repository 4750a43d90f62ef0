# `make demo` and `make test` each bootstrap .venv on first use.
VENV := .venv
# Most tests wait on servers and timers, so two workers halve the suite's time on 2 cores.
WORKERS ?= 2
STAMP := $(VENV)/.installed

.PHONY: demo test lint services clean

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

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build *.egg-info
