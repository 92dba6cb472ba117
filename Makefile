# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
DEMO_EVENTS ?= 200000

.PHONY: tools install demo replay-demo test lint typecheck unit bench bench-replay bench-memory schemas

# The system tools the tests run (promtool, prometheus, amtool, docker-compose): installed with
# apt-get as root, otherwise a stop at once with the command to run.
tools:
	sh tests/ensure-tools.sh

install:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[dev]'

# The live demo: embedded broker, worker and simulator; Ctrl-C stops everything.
demo: install
	leadlag demo

# The same simulated company folded offline: `leadlag replay` on a generated file.
# The simulated company bills some accounts in EUR, so the rate is given.
replay-demo: install
	mkdir -p build
	leadlag simulate --events $(DEMO_EVENTS) --seed 7 --incident --out build/demo.ndjson
	LEADLAG_FX_RATES=$${LEADLAG_FX_RATES:-EUR=1.08} leadlag replay build/demo.ndjson --format table

lint:
	$(PYTHON) -m ruff format --check stream schemas tests bench
	$(PYTHON) -m ruff check stream schemas tests bench

typecheck:
	$(PYTHON) -m mypy

unit:
	$(PYTHON) -m pytest

test: tools install lint typecheck unit

bench: install
	leadlag bench

bench-replay: install
	$(PYTHON) bench/replay_bench.py

# Peak RSS of replay on four site-visit inputs (memory per visitor vs per event); MEMORY_BENCH_ARGS=--scale 0.1 is quick.
bench-memory: install
	$(PYTHON) bench/memory_bench.py $(MEMORY_BENCH_ARGS)

schemas: install
	$(PYTHON) -m schemas.jsonschema --write
