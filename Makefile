# wingflow: `make demo` and `make test` bootstrap everything they need, idempotently.
#
# Variables you may set (CI keeps both outside the clone so nothing is re-installed/re-built):
#   WINGFLOW_VENV     the Python venv that provides libtorch (torch==2.11.0)  [./.venv]
#   CARGO_TARGET_DIR  cargo's build folder (cargo honours it natively)          [./target]

TORCH_VERSION := 2.11.0
PYTHON        ?= python3
WINGFLOW_VENV ?= $(CURDIR)/.venv
VENV          := $(WINGFLOW_VENV)
TORCH_STAMP   := $(VENV)/.wingflow-torch-$(TORCH_VERSION).stamp
TARGET_DIR    := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
BIN_DIR       := $(TARGET_DIR)/debug
DEMO_DIR      ?= $(CURDIR)/demo-out
# Shards written by the Rust renderer for the Python reader's tests. Written with the workspace's
# own test binaries (already built by `cargo test --workspace`); `cargo test -p render` alone
# would unify features differently and rebuild polars.
SHARD_FIXTURE := $(TARGET_DIR)/python-shard-fixture

# tch's build script finds libtorch through the venv's `python` (torch-sys: LIBTORCH_USE_PYTORCH).
export LIBTORCH_USE_PYTORCH := 1
export VIRTUAL_ENV := $(VENV)
export PATH := $(VENV)/bin:$(PATH)

.PHONY: all build test demo lint fmt clean-demo sysdeps bench-render slurm-check gpu-bin

all: build

$(TORCH_STAMP):
	@echo "==> creating $(VENV) with torch==$(TORCH_VERSION) (libtorch for tch; ~4.6 GB, a few minutes, once)"
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r python/requirements.txt
	$(VENV)/bin/python -c "import torch; assert torch.__version__.split('+')[0] == '$(TORCH_VERSION)', torch.__version__"
	touch $@

# libjpeg-turbo 3 (reduced-resolution JPEG decoding in render) is built from the turbojpeg-sys
# crate's vendored source, which needs cmake and nasm; install them when missing (Debian/Ubuntu,
# as root or through sudo).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
sysdeps:
	@command -v cmake >/dev/null && command -v nasm >/dev/null || { \
	  echo "==> installing cmake and nasm (to build libjpeg-turbo)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq cmake nasm; }

build: $(TORCH_STAMP) sysdeps
	cargo build --workspace --bins

test: build
	./scripts/check-deps.sh
	cargo test --workspace
	rm -rf $(SHARD_FIXTURE) && mkdir -p $(SHARD_FIXTURE)
	WINGFLOW_SHARD_FIXTURE=$(SHARD_FIXTURE) cargo test --workspace --lib write_python_fixture -- --ignored
	WINGFLOW_SHARD_FIXTURE=$(SHARD_FIXTURE) $(VENV)/bin/python -m pytest -q python/tests
	# The benchmarks that need no extra install, tiny, so that none rots unnoticed
	# (render_bench is built by `cargo test --workspace` above).
	./bench/smoke.sh $(BIN_DIR) $(BIN_DIR)/examples $(TARGET_DIR)/bench-smoke $(VENV)/bin/python

demo: build
	WINGFLOW_BIN_DIR=$(BIN_DIR) ./scripts/demo.sh $(DEMO_DIR)

lint: $(TORCH_STAMP) sysdeps
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

# By-hand benchmark against Albumentations (bench/README.md); not part of `make test`.
bench-render: sysdeps
	WINGFLOW_VENV=$(VENV) ./bench/render_vs_albumentations.sh

# By hand, not part of `make test`: deploy/slurm-render.sh as a real Slurm array job on a private
# one-node cluster (installs slurm-wlm and munge when missing; runs as root, through sudo if
# needed), checked byte for byte against a one-process render. SLURM_CHECK_DIR keeps the outputs.
slurm-check: build
	$(SUDO) env WINGFLOW_BIN_DIR=$(BIN_DIR) ./scripts/slurm-check.sh $(SLURM_CHECK_DIR)

# By hand: stripped binaries for bench/gpu_check.sh on a lent GPU machine (what travels there is
# capped at 64 MiB; these are about 45 MB).
gpu-bin: build
	mkdir -p $(TARGET_DIR)/gpu-bin
	strip -o $(TARGET_DIR)/gpu-bin/wingflow $(BIN_DIR)/wingflow
	strip -o $(TARGET_DIR)/gpu-bin/wingflow-train $(BIN_DIR)/wingflow-train

clean-demo:
	rm -rf $(DEMO_DIR)
