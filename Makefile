# Every target bootstraps what it needs: uv (from PyPI) and the virtual environment.
SHELL := /bin/bash
# uv from PyPI, in a small venv of its own, when the machine has none.
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
export UV_PYTHON ?= 3.11

.PHONY: run test lint format typecheck bench setup deploy-check proto fuzz chaos web

setup: .venv/.synced

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/python -m pip install --quiet uv

# Bytecode compiled once here: with PYTHONDONTWRITEBYTECODE set (as in CI and the image),
# every process (each service, each thumbnail worker) would otherwise compile its imports
# again, about a second of CPU each.
.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --compile-bytecode
	touch $@

# The web app (web/): its dependencies exactly as web/package-lock.json pins them, then
# the build (type check, bundle, precompressed assets) into web/dist, served at / (and
# the API's reference page, Swagger UI from the pinned swagger-ui-dist, at /docs).
WEB_SOURCES := $(shell find web/src web/docs -type f 2>/dev/null) web/index.html web/docs.html web/vite.config.ts web/tsconfig.json web/scripts/compress.mjs

web: web/dist/index.html

web/node_modules/.package-lock.json: web/package-lock.json web/package.json
	cd web && npm ci --no-audit --no-fund

web/dist/index.html: web/node_modules/.package-lock.json $(WEB_SOURCES)
	cd web && npm run build

run: setup web
	$(UV) run --frozen files run

# The suite as three pytest sessions at once (FILES_TEST_SHARD, tests/conftest.py says
# which tests each takes): the end-to-end tests mostly wait on their platform's
# reactions, so on 2 cores the three take far less than one session did (README, Tests).
# The S3 session's output comes as it runs, the other two's after it.
# `trap - INT`: a shell's background job ignores Ctrl-C, and the other sessions (their
# PostgreSQL, broker and platforms) ran on after `make` had stopped.
test: setup web
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy shared services/*/domain* services/ingest/*/domain* services/ingest/media services/dicom/reader.py services/dicom/lean.py services/dicom/tags.py services/*/handlers.py services/ingest/*/handlers.py clients/python/files_client
	@integration=$$(mktemp); local=$$(mktemp); \
	(trap - INT; FILES_TEST_SHARD=integration exec $(UV) run --frozen pytest -q --durations=20) >$$integration 2>&1 & ipid=$$!; \
	(trap - INT; FILES_TEST_SHARD=local exec $(UV) run --frozen pytest -q --durations=20) >$$local 2>&1 & lpid=$$!; \
	(trap - INT; FILES_TEST_SHARD=s3 exec $(UV) run --frozen pytest -q --durations=20) & s3pid=$$!; \
	trap 'kill -TERM $$ipid $$lpid $$s3pid 2>/dev/null; wait; rm -f $$integration $$local; exit 143' TERM HUP; \
	wait $$s3pid; s3=$$?; \
	wait $$ipid; i=$$?; \
	wait $$lpid; l=$$?; \
	echo; echo "== the integration tests and some S3 modules, run alongside (FILES_TEST_SHARD=integration) =="; \
	cat $$integration; rm -f $$integration; \
	echo; echo "== the unit tests, the local-disk platform and the browser, run alongside (FILES_TEST_SHARD=local) =="; \
	cat $$local; rm -f $$local; \
	test $$s3 -eq 0 -a $$i -eq 0 -a $$l -eq 0

lint: setup
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

format: setup
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

typecheck: setup
	$(UV) run --frozen mypy shared services/*/domain* services/ingest/*/domain* services/ingest/media services/dicom/reader.py services/dicom/lean.py services/dicom/tags.py services/*/handlers.py services/ingest/*/handlers.py clients/python/files_client

bench: setup
	$(UV) run --frozen python -m bench

# The OpenAPI-driven fuzzer of the e2e suite, longer: 200 examples per operation (and
# as many stateful scenarios), still seeded. FILES_FUZZ_EXAMPLES, _SEED, _MAX_TIME_S.
fuzz: setup
	FILES_FUZZ_EXAMPLES=$${FILES_FUZZ_EXAMPLES:-200} $(UV) run --frozen pytest -q tests/e2e/test_fuzz.py

# Fault injection at full size: 1,000 uploads while every piece is killed in turn
# (tests/chaos/; `make test` runs a short version). Figures in $(FILES_CHAOS_REPORT).
FILES_CHAOS_REPORT ?= .data/chaos.json
chaos: setup
	mkdir -p $(dir $(FILES_CHAOS_REPORT))
	FILES_CHAOS_UPLOADS=1000 FILES_CHAOS_FAULTS=all FILES_CHAOS_PAUSE_S=60 FILES_CHAOS_RECOVERY_S=30 \
		FILES_CHAOS_REPORT=$(abspath $(FILES_CHAOS_REPORT)) \
		$(UV) run --frozen pytest tests/chaos -q -rs -s

deploy-check: setup
	$(UV) run --frozen python deploy/check.py

# The gRPC API's Python code (services/gateway/files_pb/), generated from proto/ and committed.
proto: setup
	$(UV) run --frozen python -m grpc_tools.protoc -I proto \
		--python_out=services/gateway/files_pb --pyi_out=services/gateway/files_pb \
		--grpc_python_out=services/gateway/files_pb proto/files/v1/files.proto
	sed -i 's/^from files\.v1 import/from . import/' services/gateway/files_pb/files/v1/files_pb2_grpc.py
