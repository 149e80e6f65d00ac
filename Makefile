# make demo: set up .venv if missing, then run the main job (xor, hand vs torch, workbook).
# make test: set up .venv if missing, then run the test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint spreadsheets bench clean

$(BIN)/handgrad: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip -c constraints.txt
	$(BIN)/pip install --quiet -e ".[test]" -c constraints.txt
	touch $(BIN)/handgrad

demo: $(BIN)/handgrad
	mkdir -p out
	$(BIN)/handgrad compare xor --steps 1000 --json out/xor.json --xlsx out/xor.xlsx

test: $(BIN)/handgrad
	$(BIN)/python -m pytest -q

lint: $(BIN)/handgrad
	$(BIN)/ruff check reference tests scripts

spreadsheets: $(BIN)/handgrad
	$(BIN)/python scripts/build_spreadsheets.py

bench: $(BIN)/handgrad
	$(BIN)/python scripts/bench.py

clean:
	rm -rf $(VENV) out
