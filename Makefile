# Everyday commands. The real build is CMake (CMakePresets.json); this file only strings the steps
# together so that `make run` and `make test` work on a fresh checkout.
#
#   make run        setup, release build, then generate 256 tokens from the default model
#                   (PROMPT="..." sets the prompt, N=... the token count, ARGS="..." adds flags,
#                   e.g. make run PROMPT="Lily saw" ARGS="--temp 0")
#   make test       setup, release + debug (ASan/UBSan) builds, fast tests, then sanitizer tests
#   make test-slow  the tests labelled slow (release build)
#   make build      setup and release build only
#   make clean      remove build/

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

JOBS ?= 2
PROMPT ?= Once upon a time
N ?= 256
ARGS ?=
# The prompt reaches the shell through the environment, so quotes and $ in it stay literal.
export PROMPT

RELEASE_BIN := build/release/squeeze

.PHONY: all setup configure-release configure-debug build build-debug run test test-slow clean

all: build

setup:
	@scripts/setup.sh

configure-release: setup
	cmake --preset release

configure-debug: setup
	cmake --preset debug

build: configure-release
	cmake --build --preset release -j $(JOBS)

build-debug: configure-debug
	cmake --build --preset debug -j $(JOBS)

run: build
	model="$$(scripts/default_model.sh)"; \
	$(RELEASE_BIN) run -m "$$model" -p "$$PROMPT" -n $(N) $(ARGS)

# Both suites run even when the first fails, so that one run shows every failure; the exit status is
# still non-zero if either failed.
test: build build-debug
	status=0; \
	ctest --preset release --parallel $(JOBS) || status=1; \
	ctest --preset debug --parallel $(JOBS) || status=1; \
	exit $$status

test-slow: build
	ctest --preset release-slow --parallel $(JOBS)

clean:
	rm -rf build
