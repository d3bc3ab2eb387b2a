# The everyday commands. `make demo` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
CORE := packages/boxlite-core
export CARGO_TARGET_DIR := $(CURDIR)/$(CORE)/target

.PHONY: setup system python guest images demo test test-rust test-adapters audit bench bench-heavy lint fmt clean

setup: system python guest

system:            ## QEMU, kernel source and build tools, image tools, uv
	./scripts/setup-system.sh

python:            ## the uv workspace (builds the Rust extension)
	uv sync --locked

guest:             ## guest kernel (cached by its inputs) and initramfs with the agent
	$(CORE)/guest-assets/build.sh

images:            ## the local test images as OCI layouts (cached)
	uv run --locked python tests/images/build_images.py

demo: setup        ## boot a box on the local Debian+python image and run Python in it
	uv run --locked python examples/hello.py

test: setup test-rust  ## every test: Rust unit tests, the adapters' unit tests, then end-to-end tests booting real VMs
	uv run --locked pytest -v

test-adapters: python  ## the adapter packages' unit tests alone (no VM, seconds)
	uv run --locked pytest -v packages/boxlite-langchain/tests packages/boxlite-crewai/tests packages/boxlite-llamaindex/tests

audit: setup       ## the hostile-input tests alone: hostile archives, frames, images, volumes, egress, logs
	cargo test --locked --manifest-path $(CORE)/Cargo.toml -p boxlite-protocol archive
	cargo test --locked --manifest-path $(CORE)/Cargo.toml -p boxlite-engine -- image:: agent:: egress:: logs:: agent_socket::
	uv run --locked pytest -v -m hostile

test-rust:
	cargo test --locked --manifest-path $(CORE)/Cargo.toml --workspace

bench: setup       ## start, exec (also under load), idle-box memory, boot reliability, pool, image figures
	uv run --locked python benchmarks/bench_engine.py
	uv run --locked python benchmarks/bench_output.py
	uv run --locked python benchmarks/bench_pool.py
	uv run --locked python benchmarks/bench_images.py
	uv run --locked --group bench python benchmarks/bench_tools.py
	uv run --locked python benchmarks/bench_mcp.py
	uv run --locked python benchmarks/bench_ray.py
	uv run --locked python benchmarks/bench_pause.py
	uv run --locked python benchmarks/bench_snapshot.py
	uv run --locked python benchmarks/bench_snapshot_pool.py
	uv run --locked python benchmarks/bench_fork_memory.py

bench-heavy: setup ## BrowserBox and ComputerBox: start, first page, screenshots, pools (minutes under TCG)
	uv run --locked python benchmarks/bench_browser.py
	uv run --locked python benchmarks/bench_browser.py --pool
	uv run --locked python benchmarks/bench_computer.py
	uv run --locked python benchmarks/bench_computer.py --pool

lint:
	uv run --locked ruff check .
	uv run --locked ruff format --check .
	uv run --locked mypy
	cargo clippy --locked --manifest-path $(CORE)/Cargo.toml --workspace --all-targets -- -D warnings
	cargo fmt --manifest-path $(CORE)/Cargo.toml --all --check

fmt:
	uv run --locked ruff format .
	uv run --locked ruff check --fix .
	cargo fmt --manifest-path $(CORE)/Cargo.toml --all

clean:
	rm -rf $(CORE)/target $(CORE)/python/boxlite/_guest .venv
