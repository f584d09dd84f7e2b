# The two commands a newcomer needs: `make dev` and `make test` (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help
.PHONY: help bootstrap dev test lint

help:
	@echo "make dev   - run the whole backend locally (moto, local gateway, workers, demo tenant)"
	@echo "make test  - install what tests need, then lint, build and run every test, then fuzz the API"

bootstrap:
	@bash infra/bootstrap.sh

dev: bootstrap
	cargo run -q --bin devstack

lint: bootstrap
	cargo fmt --all --check
	.venv/bin/cfn-lint template.yaml
	cargo clippy --workspace --all-targets -- -D warnings

test: lint
	cargo build --workspace --bins
	cargo test --workspace
	bash infra/fuzz-api.sh
