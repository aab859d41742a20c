# `make demo` runs the main job, `make test` the tests; both set up .venv first (a second setup is a no-op).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-done
DEMO_OUT ?= runs/demo

.PHONY: setup test test-fast lint typecheck pytest docs demo classic-demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first: the pinned release is a CPU build on these machines; an unpinned one pulls CUDA (GBs).
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	# The bench extra (Stable-Baselines3) too: mypy checks the side-by-side benchmarks against it; postgres: the
	# store's PostgreSQL tests (they run when RLHF_TEST_POSTGRES_URL names a server, as in .ci/run); mujoco: the
	# MuJoCo tasks' tests.
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev,bench,postgres,mujoco]"
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

pytest: setup
	WANDB_MODE=disabled $(BIN)/pytest -q

test: lint typecheck pytest

# The documentation site into build/site (tests/docs builds it too, so `make test` fails on a broken page).
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# The inner loop: everything but the learning checks and multi-second end-to-end runs (tests marked `slow`).
test-fast: lint typecheck
	WANDB_MODE=disabled $(BIN)/pytest -q -m "not slow"

demo: setup
	rm -rf $(DEMO_OUT)  # a fresh demo each time; `rlhf demo --resume` continues an interrupted one
	$(BIN)/rlhf demo --out $(DEMO_OUT)

classic-demo: setup
	rm -rf runs/classic
	$(BIN)/rlhf bandit --figure 2.2 --out runs/classic/bandit-figure-2.2
	$(BIN)/rlhf bandit --figure 2.6 --runs 500 --out runs/classic/bandit-figure-2.6
	$(BIN)/rlhf tabular --env GridWorld-v0 --preset cliff --algo sarsa --algo q-learning \
		--alpha 0.5 --epsilon 0.1 --episodes 500 --runs 20 --out runs/classic/tabular-cliff
	$(BIN)/rlhf tabular --env FrozenLake-v1 --algo value-iteration --gamma 0.99 --out runs/classic/tabular-frozenlake

bench: setup
	for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
