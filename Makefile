# Two commands on a fresh machine: `make run` (set-up, then the main job) and `make test`
# (set-up, then every test). Set-up = system packages, .venv, pinned dependencies, native build.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.bas-installed
NATIVE := $(wildcard native/*.c native/*.h native/build_ffi.py)
PROFILE_DIR ?= $(CURDIR)/.bas-run
SERVE_DIR ?= $(CURDIR)/.serving

.PHONY: setup sysdeps native run profile test test-asan lint bench clean

setup: sysdeps $(STAMP) native

sysdeps:
	@bash tools/setup-system.sh

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) requirements.lock pyproject.toml setup.py
	$(PY) -m pip install -q --upgrade pip==26.3 setuptools==84.2.1 wheel==0.48.0
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

native: bas/.native-built

bas/.native-built: $(STAMP) $(NATIVE)
	$(PY) setup.py -q build_ext --inplace
	touch $@

# The main job: serve the demo model (built on the first run, random weights) on 127.0.0.1:8343
# in the foreground, OpenAI-compatible; it prints a curl and an openai example. Ctrl-C stops.
run: setup
	$(PY) -m serving.run --demo --store $(SERVE_DIR)

# Profile this machine's DRAM and local file system, print the BRAID table.
profile: setup
	@mkdir -p $(PROFILE_DIR)
	$(PY) -m bas.profile "dram://?size=256M" "file://$(PROFILE_DIR)/profile.bin?size=256M" \
		--quick --save $(PROFILE_DIR) --plot $(PROFILE_DIR)/braid.png

test: setup
	$(PY) -m pytest

# The native tests under AddressSanitizer: an instrumented build, run with libasan preloaded
# (Python itself is not instrumented: leak checks are off), then the normal build again.
ASAN_TESTS ?= tests/unit/test_native_io.py tests/unit/test_native_safety.py \
	tests/property/test_sort_kernels.py tests/property/test_gensort_reference.py \
	tests/conformance/test_local_backends.py tests/integration/test_pmem_pool.py
test-asan: setup
	rm -f bas/.native-built  # if this run is cut short, the next make rebuilds the normal one
	BAS_NATIVE_DEBUG=1 $(PY) setup.py -q build_ext --inplace --force
	LD_PRELOAD=$$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:handle_sigbus=0 \
		$(PY) -m pytest -q -p no:faulthandler $(ASAN_TESTS); status=$$?; \
	$(PY) setup.py -q build_ext --inplace --force; touch bas/.native-built; exit $$status

lint: setup
	$(VENV)/bin/ruff check .

# Benchmark peers are not test dependencies: installed here only, with --no-deps after the torch
# pin of requirements.lock (a peer's own torch requirement must not replace it), then checked.
bench: setup
	$(PY) -m pip install -q --no-deps -r requirements-bench.lock
	$(PY) -c "import duckdb, polars, pyarrow, tensorizer, fastsafetensors, runai_model_streamer, accelerate"
	$(PY) tools/bench --list

clean:
	rm -rf build $(VENV) bas/*.so bas/_bas_*.c bas/.native-built $(PROFILE_DIR) $(SERVE_DIR)
