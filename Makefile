# make demo: set up .venv if missing, then run the main job (xor, hand vs torch, workbook).
# make test: set up .venv if missing, then run the test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint spreadsheets bench clean coverage-formulas

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

# make coverage-formulas: the LibreOffice recompute tests only, under coverage.py in branch mode,
# measuring the formula builders (workbook/formulas.py, loss_formulas.py); fails below 100 % branch coverage.
# See manual/harness.md, "What the lock-step cannot see".
FORMULA_TESTS := tests/test_walkthrough.py tests/test_training_sheet.py tests/test_formula_branches.py \
	tests/test_conv_walkthrough.py tests/test_recurrent_walkthrough.py tests/test_makemore_walkthrough.py \
	tests/test_transformer_walkthrough.py tests/test_loss_sheets.py tests/test_multitask_walkthrough.py \
	tests/test_conv_slice.py

coverage-formulas: $(BIN)/handgrad
	$(BIN)/python -m coverage erase --rcfile=coverage-formulas.ini
	HANDGRAD_REQUIRE_LIBREOFFICE=1 $(BIN)/python -m coverage run --rcfile=coverage-formulas.ini \
		-m pytest -q -p no:cacheprovider -m "libreoffice and not slow" $(FORMULA_TESTS)
	$(BIN)/python -m coverage report --rcfile=coverage-formulas.ini

lint: $(BIN)/handgrad
	$(BIN)/ruff check reference tests scripts

spreadsheets: $(BIN)/handgrad
	$(BIN)/python scripts/build_spreadsheets.py

bench: $(BIN)/handgrad
	$(BIN)/python scripts/bench.py

clean:
	rm -rf $(VENV) out
