# Hearth's two set-up commands: `make up` (start Hearth: API and dashboard) and `make test` (run the tests).
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: up test test-fast test-unit venv system images microvm-image lint bench soak clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# Debian's docker.io (and a running dockerd), mmdebstrap and friends; needs root to install.
system:
	@if [ "$$(id -u)" = 0 ]; then bash scripts/install-system.sh; else bash scripts/ensure-docker.sh; fi

images: venv system
	$(BIN)/python -m hearth.images.containers
	$(BIN)/python -m hearth.images.aws_sdk
	$(BIN)/python -m hearth.images.provided
	$(BIN)/python -m hearth.engine.provided

# The microvm backend's guest (kernel, read-only root, initramfs) from Debian packages; cached by recipe
# hash outside the repository (HEARTH_MICROVM_CACHE_DIR). The microvm tests build it on demand as root.
microvm-image: venv system
	$(BIN)/python -m hearth.images.microvm

up: venv system images
	$(BIN)/hearth serve --dashboard

# pytest's exit code 5 (no tests collected, e.g. a -k that matches nothing) is not a failure.
test: venv system images
	$(BIN)/pytest $(PYTEST_ARGS) || [ $$? -eq 5 ]

# The quick loop: everything but the tests marked slow (the microVM backend under TCG).
# PYTEST_ARGS narrows further, e.g. make test-fast PYTEST_ARGS=tests/api
test-fast: venv system images
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS) || [ $$? -eq 5 ]

# The unit tier (tests/unit/): the engine against the in-process FakeBackend with a manual clock, the
# scheduler worker against in-memory doubles; no Docker, no images, seconds.
test-unit: venv
	$(BIN)/pytest tests/unit $(PYTEST_ARGS) || [ $$? -eq 5 ]

lint: venv
	$(BIN)/ruff check src tests bench

bench: venv system images
	$(BIN)/python -m bench.run

# A bounded mixed load of normal and hostile functions (SOAK_SECONDS, default 120).
soak: venv system images
	$(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
