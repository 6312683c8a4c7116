PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: setup demo test lint bench-fast bench-best bench-ensemble clean

setup: $(STAMP)

# Re-runs pip only when the pinned lists change, so a second `make setup` takes a second.
$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(PY) || python3.11 -m venv .venv
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: setup
	$(PY) -m maskcls demo

# The browser test drives Debian's Chromium, the search test a PostgreSQL server: the scripts install
# them where they are missing (apt, as root), with-postgres.sh runs the suite beside a throwaway
# server and stops it afterwards; where either cannot be had, they say loudly which test will skip.
# Two workers share the machine's two cores (pytest-xdist), a test file each at a time, so a
# file's fixtures are built once. The slowest tests are listed at the end: the suite must stay
# under CI's ten minutes.
test: setup
	sh tools/browser-deps.sh
	sh tools/with-postgres.sh $(PY) -m pytest -q -rs -n 2 --dist loadfile --durations=12 tests

lint: setup
	$(PY) -m ruff check maskcls tests bench

bench-fast: setup
	$(PY) bench/quality.py --recipe cpu-fast

bench-best: setup
	$(PY) bench/quality.py --recipe cpu-best

bench-ensemble: setup
	$(PY) bench/ensemble.py

clean:
	rm -rf .venv runs demo_out
