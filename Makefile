# rlsys: `make run` runs PPO on the embedded default; `make test` runs the CPU test suite.
# Both create .venv first if it is missing (scripts/setup_env.sh is idempotent).
PY := .venv/bin/python
ARGS ?=

.PHONY: setup run test test-fast
setup:
	@bash scripts/setup_env.sh

run: setup
	$(PY) -m rlsys.main +recipe=ppo $(ARGS)

test: setup
	$(PY) -m pytest -q -ra --durations=40 $(ARGS)

test-fast: setup
	$(PY) -m pytest -q -ra -m "not slow" $(ARGS)
