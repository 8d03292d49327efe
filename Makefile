# mitalk-p2p build and test commands.
#
#   make test   install what is missing, then lint, type-check and run the tests
#   make demo   install what is missing, then run a live room of 10 processes on 127.0.0.1
#   make bench  install what is missing, then run the benchmark set (BENCHMARKS.md); slow
#
# "What is missing" is, in order: the system libraries (libopus0,
# libportaudio2, and python3-venv when the venv module is unavailable), the
# virtualenv in $(VENV), and the package installed editable with its test
# and report extras.  Each step is skipped when already done: the system check only reads
# the linker cache, and the Python install is redone only when pyproject.toml
# changes (it is tracked by the stamp file $(VENV)/.installed).

PYTHON ?= python3
VENV ?= .venv
PYTEST_ARGS ?=

BIN := $(VENV)/bin
VENV_STAMP := $(VENV)/.created
INSTALL_STAMP := $(VENV)/.installed
APT_INSTALL := apt-get install -y --no-install-recommends

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.ONESHELL:
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules --no-print-directory

.PHONY: help test demo bench fuzz install sysdeps lint typecheck pytest check venv-present clean distclean

help:
	@echo "make test       install what is missing, then lint, typecheck and pytest (this is CI)"
	echo "make demo       install what is missing, then run '$(BIN)/mitalk demo'"
	echo "make bench      install what is missing, then run the benchmarks of BENCHMARKS.md"
	echo "                ($(BENCH_RUNS) runs each, results in $(BENCH_OUT)/; about 15 minutes)"
	echo "make fuzz       install what is missing and atheris, then fuzz every parser"
	echo "                ($(FUZZ_SECONDS) s per target, FUZZ_TARGETS=... to pick; corpus in $(FUZZ_DIR)/)"
	echo "make install    only the installation steps (system packages, $(VENV), package)"
	echo "make check      lint, typecheck and pytest, without installing anything"
	echo "make lint       ruff check"
	echo "make typecheck  mypy --strict (configured in pyproject.toml)"
	echo "make pytest     the test suite only (extra arguments: PYTEST_ARGS=...)"
	echo "make clean      remove caches and build output"
	echo "make distclean  clean, and remove $(VENV) too"

test: install
	@$(MAKE) check

demo: install
	$(BIN)/mitalk demo

# The benchmark set of BENCHMARKS.md, each run BENCH_RUNS times; every run's JSON is
# kept in BENCH_OUT and the medians are printed at the end.  Not part of 'make test':
# the figures depend on the machine, and a busy one must not fail CI.
BENCH_RUNS ?= 3
BENCH_OUT ?= bench-out
BENCH_FANOUT := $(BIN)/mitalk bench fanout --fanout 8 --seconds 10 --json

bench: install
	@mkdir -p $(BENCH_OUT)
	for run in $$(seq 1 $(BENCH_RUNS)); do
	    echo "== run $$run of $(BENCH_RUNS)"
	    $(BENCH_FANOUT) --listeners 300 > $(BENCH_OUT)/fanout-300-$$run.json
	    $(BENCH_FANOUT) --listeners 300 --shared-crypto > $(BENCH_OUT)/fanout-300-shared-$$run.json
	    $(BENCH_FANOUT) --listeners 1000 --shared-crypto > $(BENCH_OUT)/fanout-1000-shared-$$run.json
	    $(BENCH_FANOUT) --listeners 300 --frame-ms 40 > $(BENCH_OUT)/fanout-300-40ms-$$run.json
	    $(BIN)/mitalk bench sim --json > $(BENCH_OUT)/sim-large_room-$$run.json
	done
	$(BIN)/python -m mitalk_p2p.bench.summary $(BENCH_OUT)/*.json

# Coverage-guided fuzzing of every parser with atheris (the targets are in fuzz/).  Each
# target runs FUZZ_SECONDS; its corpus is kept and grown in FUZZ_DIR/corpus/TARGET, its log
# is FUZZ_DIR/logs/TARGET/fuzz.log, and a crashing input goes to FUZZ_DIR/crashes/TARGET/.
# Fails if any target crashed (or hung for FUZZ_TIMEOUT seconds on one input).  Not part of
# 'make test': the checks of the same parsers that run in CI are hypothesis tests.
FUZZ_SECONDS ?= 30
FUZZ_TIMEOUT ?= 10
FUZZ_TARGETS ?=
FUZZ_DIR ?= fuzz-out
FUZZ_ARGS ?=
FUZZ_STAMP := $(VENV)/.fuzz-installed

fuzz: install $(FUZZ_STAMP)
	@targets="$(FUZZ_TARGETS)"
	[ -n "$$targets" ] || targets="$$($(BIN)/python -m fuzz.run --list)"
	out="$$(realpath -m "$(FUZZ_DIR)")"
	failed=()
	for target in $$targets; do
	    corpus="$$out/corpus/$$target" crashes="$$out/crashes/$$target" logs="$$out/logs/$$target"
	    log="$$logs/fuzz.log"
	    mkdir -p "$$corpus" "$$crashes" "$$logs"
	    echo "== fuzz $$target for $(FUZZ_SECONDS) s"
	    # Run from the log directory: with -jobs, libFuzzer writes fuzz-N.log where it runs.
	    if (cd "$$logs" && PYTHONPATH="$(CURDIR)" "$(abspath $(BIN))/python" -m fuzz.run \
	            "$$target" "$$corpus" -max_total_time=$(FUZZ_SECONDS) -timeout=$(FUZZ_TIMEOUT) \
	            -artifact_prefix="$$crashes/" $(FUZZ_ARGS)) > "$$log" 2>&1; then
	        grep -E '^#[0-9]+[[:space:]]+DONE|^Done ' "$$log" | sed 's/^/   /' || true
	    else
	        echo "   CRASHED: see $$log; the input is in $$crashes/" >&2
	        awk '/Uncaught Python exception|ERROR: libFuzzer|ALARM:|out-of-memory/ {p = 1} p' \
	            "$$log" | grep -v '^"' | head -60 >&2 || true
	        failed+=("$$target")
	    fi
	done
	if [ $${#failed[@]} -ne 0 ]; then
	    echo "make fuzz: crashes in: $${failed[*]}" >&2
	    exit 1
	fi
	echo "make fuzz: no crashes"

$(FUZZ_STAMP): pyproject.toml $(INSTALL_STAMP)
	$(BIN)/python -m pip install --disable-pip-version-check --progress-bar off -e '.[test,report,fuzz]'
	touch $@

install: sysdeps $(INSTALL_STAMP)

# System packages.  Present libraries are found in the linker cache (or, failing
# that, in dpkg's database), so apt-get is not run at all when nothing is missing.
sysdeps:
	@missing=()
	libs="$$(PATH="$$PATH:/sbin:/usr/sbin" ldconfig -p 2>/dev/null || true)"
	have_lib() {
	    grep -q "$$1" <<<"$$libs" && return 0
	    dpkg-query -W -f='$${Status}' "$$2" 2>/dev/null | grep -q 'install ok installed'
	}
	have_lib 'libopus\.so\.0' libopus0 || missing+=(libopus0)
	have_lib 'libportaudio\.so\.2' libportaudio2 || missing+=(libportaudio2)
	# The sound-device tests (tests/audio) run a private PulseAudio server and reach it
	# through PortAudio's ALSA backend and ALSA's "pulse" PCM plugin.  Neither file is in
	# the linker cache, so these two are found through dpkg.
	have_lib 'libasound_module_pcm_pulse\.so' libasound2-plugins || missing+=(libasound2-plugins)
	have_lib 'libpulsecore-[0-9.]*\.so' pulseaudio || missing+=(pulseaudio)
	# The LAN tests (tests/lan) list the room with the stock mDNS browser: a private
	# avahi-daemon inside a test namespace, asked with avahi-browse.  These are programs,
	# never in the linker cache, so dpkg decides.
	have_lib '/usr/sbin/avahi-daemon' avahi-daemon || missing+=(avahi-daemon)
	have_lib '/usr/bin/avahi-browse' avahi-utils || missing+=(avahi-utils)
	if [ ! -e $(VENV_STAMP) ]; then
	    if ! command -v $(PYTHON) >/dev/null 2>&1; then
	        missing+=(python3 python3-venv)
	    elif ! $(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1; then
	        missing+=(python3-venv)
	    fi
	fi
	[ $${#missing[@]} -eq 0 ] && exit 0
	if ! command -v apt-get >/dev/null 2>&1; then
	    echo "make: missing system packages: $${missing[*]}" >&2
	    echo "make: this is not a Debian/Ubuntu system; install their equivalents" \
	         "with your package manager, then run make again." >&2
	    exit 1
	fi
	if [ "$$(id -u)" -ne 0 ]; then
	    echo "make: missing system packages: $${missing[*]}" >&2
	    echo "make: installing them needs root. Run this, then run make again:" >&2
	    echo "" >&2
	    echo "    sudo apt-get update && sudo $(APT_INSTALL) $${missing[*]}" >&2
	    echo "" >&2
	    exit 1
	fi
	echo "Installing system packages: $${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update
	# The tests start their own avahi-daemon inside a network namespace.  Installing the
	# package must not start (or enable) the system's one, which would speak mDNS on the
	# real network: policy-rc.d refuses service starts for the duration of the install.
	guard=/usr/sbin/policy-rc.d
	if [ ! -e "$$guard" ]; then
	    printf '#!/bin/sh\nexit 101\n' > "$$guard" && chmod 755 "$$guard"
	    trap 'rm -f "$$guard"' EXIT
	fi
	$(APT_INSTALL) "$${missing[@]}"
	if [[ " $${missing[*]} " == *" avahi-daemon "* ]] && command -v systemctl >/dev/null; then
	    systemctl disable avahi-daemon.service avahi-daemon.socket >/dev/null 2>&1 || true
	fi

# An existing, working virtualenv is kept as it is.
$(VENV_STAMP): | sysdeps
	@if ! { [ -x $(BIN)/python ] && $(BIN)/python -m pip --version >/dev/null 2>&1; }; then
	    echo "Creating $(VENV) with $(PYTHON)"
	    $(PYTHON) -m venv $(VENV)
	    $(BIN)/python -m pip --version >/dev/null
	fi
	touch $@

$(INSTALL_STAMP): pyproject.toml $(VENV_STAMP)
	$(BIN)/python -m pip install --disable-pip-version-check --progress-bar off -e '.[test,report]'
	touch $@

check: lint typecheck pytest

lint: venv-present
	$(BIN)/ruff check

typecheck: venv-present
	$(BIN)/mypy

pytest: venv-present
	$(BIN)/pytest $(PYTEST_ARGS)

venv-present:
	@if [ ! -x $(BIN)/ruff ] || [ ! -x $(BIN)/mypy ] || [ ! -x $(BIN)/pytest ]; then
	    echo "make: $(VENV) is missing or incomplete; run 'make install' (or 'make test') first" >&2
	    exit 1
	fi

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -type d \
	    -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
