# Every target bootstraps what it needs: uv (from PyPI) and the virtual environment.
SHELL := /bin/bash
# uv from PyPI when the machine has none; `python3 -m uv` works wherever pip put it.
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
export UV_PYTHON ?= 3.11

.PHONY: run test lint format typecheck bench setup

setup: .venv/.synced

.venv/.synced: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet --user uv
	$(UV) sync --frozen
	touch $@

run: setup
	$(UV) run --frozen files run

test: setup
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy shared services/*/domain*
	$(UV) run --frozen pytest -q

lint: setup
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

format: setup
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

typecheck: setup
	$(UV) run --frozen mypy shared services/*/domain*

bench: setup
	$(UV) run --frozen python -m bench
