# Every target runs on the project's own Node 24 (.tools/bin, see scripts/ensure-node.sh).
SHELL := /bin/bash
export PATH := $(CURDIR)/.tools/bin:$(CURDIR)/node_modules/.bin:$(PATH)

# Test database (created by scripts/services.sh postgres).
export BLYTZ_TEST_DATABASE_URL ?= postgres://blytz:blytz@127.0.0.1:5432/blytz

.PHONY: all tools deps build run test test-unit test-integration chaos services test-image openclaw-image lint typecheck bench clean

all: build

tools:
	@scripts/ensure-node.sh

# npm ci only when the lock file is newer than what is installed.
node_modules/.package-lock.json: package-lock.json | tools
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

deps: tools node_modules/.package-lock.json

build: deps
	tsc -p tsconfig.build.json

# The server on the embedded database. As root it first makes sure a Docker engine and Caddy
# answer (scripts/services.sh), so /readyz is green on a bare machine.
run: build
	@if [ "$$(id -u)" = 0 ]; then scripts/services.sh docker caddy image openclaw; else echo "[run] not root: start Docker and Caddy yourself (see README)"; fi
	bin/blytz serve

services:
	scripts/services.sh all

test-image:
	scripts/services.sh image

# The real customer image, ghcr.io/openclaw/openclaw:<version in src/domain/openclaw.ts>, built
# from the npm package without a registry (the upstream tag, so production pulls the same name).
openclaw-image: tools
	scripts/services.sh openclaw

typecheck: deps
	tsc -p tsconfig.json --noEmit

lint: deps
	eslint .

# The README's test command: installs and starts what the tests need, builds, runs every suite
# and closes with the line "N passed, N failed".
test: build services
	tsc -p tsconfig.json --noEmit
	scripts/run-tests.sh

test-unit: deps
	vitest run --project unit

# The chaos suite alone (also the last step of `make test`): faults under webhook traffic; writes
# test-results/chaos.md and test-results/chaos.json. Needs root (its own dockerd and Postgres).
chaos: build services
	mkdir -p test-results
	vitest run --project chaos --reporter=default --reporter=json --outputFile.json=test-results/chaos.json; \
	  status=$$?; node scripts/summarize-tests.mjs test-results/chaos.json && exit $$status

bench: build services
	scripts/run-bench.sh

clean:
	rm -rf dist test-results
