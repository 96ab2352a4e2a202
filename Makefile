# The README's commands. `make demo` and `make test` each work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Only the demo targets use these; tests make their own temporary homes.
DEMO_HOME ?= $(CURDIR)/greenstream_data
DEMO_ENV = GREENSTREAM_HOME="$(DEMO_HOME)" DAGSTER_HOME="$(DEMO_HOME)/dagster_home"
DEMO_PORT ?= 3000
DEMO_METERS ?= 200
DEMO_DAYS ?= 3

.PHONY: setup test lint demo demo-data benchmark clean

setup: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/pytest

# Sample files for the DEMO_DAYS UTC days before today, dropped into landing/ for the sensor
# (only while the data home has nothing landed yet, so a restart keeps the demo's state).
demo-data: setup
	mkdir -p "$(DEMO_HOME)/landing" "$(DEMO_HOME)/dagster_home"
	cp deploy/dagster.yaml "$(DEMO_HOME)/dagster_home/dagster.yaml"
	@if [ -z "$$(ls -A "$(DEMO_HOME)/raw" 2>/dev/null)" ]; then \
	  start=$$($(BIN)/python -c "import datetime as d; print(d.datetime.now(d.UTC).date() - d.timedelta(days=$(DEMO_DAYS)))"); \
	  $(BIN)/greenstream generate --meters $(DEMO_METERS) --days $(DEMO_DAYS) --start $$start \
	    --out "$(DEMO_HOME)/sample" --seed 7 && \
	  cp "$(DEMO_HOME)"/sample/headend_* "$(DEMO_HOME)/landing/"; \
	else echo "data home already has landed files; not adding sample data"; fi

demo: demo-data
	@echo "GreenStream demo: web UI on http://127.0.0.1:$(DEMO_PORT); drop files into $(DEMO_HOME)/landing/"
	$(DEMO_ENV) $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(DEMO_PORT)

benchmark: setup
	$(BIN)/python benchmarks/pipeline_benchmark.py

clean:
	rm -rf $(VENV) greenstream_data
