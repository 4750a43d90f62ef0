# `make demo` and `make test` each bootstrap .venv on first use.
VENV := .venv
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
	PATROL_NO_SKIP=1 $(VENV)/bin/python -m pytest --durations=25

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build *.egg-info
