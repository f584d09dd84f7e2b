# The two commands a newcomer needs: `make dev` and `make test` (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help
.PHONY: help bootstrap dev test lint package bench

help:
	@echo "make dev   - run the whole backend locally (moto, local gateway, workers, demo tenant)"
	@echo "make test  - install what tests need, then lint, build and run every test (the console in Chromium), then fuzz the API"
	@echo "make package - cross-build every function for arm64 (cargo-lambda + zig in .venv), list zip sizes"
	@echo "make bench   - performance report of every function: bench/REPORT.md + bench/results.json"
	@echo "make bench-privacy - requests per erased / retention-deleted item (MESSAGES=10000)"
	@echo "make bench-webhook - webhook ack latency p50/p99 by delivery size, statuses/s per instance"
	@echo "make bench-media - media worker peak RSS with 10 concurrent 100 MiB documents (limit 128 MB)"
	@echo "make bench-events  - events function CPU per event, 1,000 events/s sustained, end-to-end latency"
	@echo "make bench-templates - template send validation CPU vs POST /v1/messages (target <= 5 %)"
	@echo "make bench-devstack - the local endpoint at 10,000 contacts / 100,000 messages: latency, memory"
	@echo "make bench-broadcasts - a campaign over the in-memory store: planning time, store requests per recipient (N=20000)"
	@echo "make bench-event-log - write units per event on a tenant's event log key at 1,000 msg/s with three statuses each"
	@echo "make bench-campaign - 100,000 recipients through engine, senders (1,000/s) and fake Graph: rate, 130429, memory, writes per key"
	@echo "make bench-reports - counter updates per 1,000 events; a 90-day report of every grouping: requests, CPU"
	@echo "make bench-console - the web console: bytes shipped, time to an interactive inbox (release local stack)"
	@echo "make bench-automations - events function CPU per inbound message with 50 automation rules vs none"
	@echo "make bench-sdk - SDK client CPU per DynamoDB request against an endpoint that answers at once, per client configuration"

bootstrap:
	@bash infra/bootstrap.sh

dev: bootstrap
	cargo run -q --bin devstack

lint: bootstrap
	cargo fmt --all --check
	.venv/bin/cfn-lint template.yaml
	.venv/bin/checkov --quiet --compact --framework cloudformation --config-file .checkov.yaml --file template.yaml
	cargo clippy --workspace --all-targets -- -D warnings

test: lint
	cargo build --workspace --bins
	# Debug builds keep whole async handlers on the stack: the e2e tests that drive the events
	# function with automations overflow libtest's 2 MiB threads (release futures are far smaller).
	RUST_MIN_STACK=16777216 cargo test --workspace
	bash console/tests/run.sh
	bash infra/fuzz-api.sh

# The functions `rust-cargolambda` builds (BuildProperties.Binary in template.yaml).
FUNCTION_BINS := $(shell awk '/BuildMethod: rust-cargolambda/ {f = 1} f && /Binary:/ {print $$2; f = 0}' template.yaml)

package: bootstrap
	bash infra/package.sh

# Not part of `make test` (timings belong in a report, never in a test). The arm64 packages
# (`make package`: the release profile, what is deployed, whose sizes the report gives), then in
# one cargo invocation the native binaries the report measures: every function and the bench's
# own and the local stack the console bench starts, in the `measure` profile (Cargo.toml); then
# every measurement (see bench/).
BENCH_BINS := bench hello-lambda putitem-ref phone-first-use broadcast-bench media-rss sdk-request event-log-units devstack crmctl
bench: package
	cargo build --profile measure --workspace $(addprefix --bin ,$(FUNCTION_BINS) $(BENCH_BINS))
	target/measure/bench

# Webhook benchmark (not a test): ack latency of 1/10/100/1,000-message deliveries and status
# deliveries per second per instance, over the in-memory store with 5 ms per DynamoDB request.
.PHONY: bench-webhook
bench-webhook:
	cargo build --release -p bench --bin webhook-ack
	target/release/webhook-ack $(WEBHOOK_ACK_ARGS)

# Event stream benchmark (not a test): events function CPU per event, 1,000 events/s for one
# tenant and one endpoint sustained (in-memory store, 5 ms per request), and change stored →
# webhook received p50/p99 on the local stack (moto's stream, real handlers, SQS).
.PHONY: bench-events
bench-events: bootstrap
	cargo build --release -p bench --bin events-bench
	target/release/events-bench $(EVENTS_BENCH_ARGS)

# Template benchmark (not a test): CPU of a template send's local validation against the API's
# whole POST /v1/messages (target: at most 5 %), and registry reads per send.
.PHONY: bench-templates
bench-templates:
	cargo build --release -p bench --bin template-validate
	target/release/template-validate

# Broadcast benchmark (not a test): one campaign of N recipients through the real engine over the
# in-memory store: planning time, store requests per recipient, writes per key.
.PHONY: bench-broadcasts
bench-broadcasts:
	cargo build --release -p bench --bin broadcast-bench
	target/release/broadcast-bench $(or $(N),20000)

# Campaign benchmark (not a test): N recipients (default 100,000) through the engine, real
# sender instances with the limiter at 1,000/s against the fake Graph, and three statuses each:
# planning time, requests per recipient, sent rate against the share, 130429s, memory, writes
# per partition key (table and index keys). Takes a few minutes (the engine runs every minute).
.PHONY: bench-campaign
bench-campaign:
	cargo build --release -p bench --bin broadcast-bench
	target/release/broadcast-bench campaign $(or $(N),100000) $(CAMPAIGN_ARGS)

# Reports benchmark (not a test): counter item updates per 1,000 events (the real events handler
# over the in-memory store) and a 90-day report of every grouping: store requests and CPU.
.PHONY: bench-automations
bench-automations:
	cargo build --release -p bench --bin automations-bench
	target/release/automations-bench $(AUTOMATIONS_BENCH_ARGS)

# SDK benchmark (not a test): the client CPU of one DynamoDB request (PutItem, the webhook's
# TransactWriteItems, GetItem) as an AWS sample configures the SDK and as the functions do.
.PHONY: bench-sdk
bench-sdk:
	cargo build --profile measure -p bench --bin sdk-request
	target/measure/sdk-request $(SDK_BENCH_ARGS)

# Event log benchmark (not a test): write units per event on a tenant's log key when a
# campaign's three statuses per message arrive at 1,000 msg/s (packs deflated vs listed).
.PHONY: bench-event-log
bench-event-log:
	cargo build --profile measure -p bench --bin event-log-units
	target/measure/event-log-units $(EVENT_LOG_BENCH_ARGS)

.PHONY: bench-reports
bench-reports:
	cargo build --release -p bench --bin reports-bench
	target/release/reports-bench

# The local stack at size (not a test): request latency and endpoint memory at 1,000 / 5,000 /
# 10,000 contacts with 10 messages each, on the endpoint `make dev` and the tests run.
.PHONY: bench-devstack
bench-devstack: bootstrap
	cargo build --release -p bench --bin devstack-size
	target/release/devstack-size $(DEVSTACK_SIZE_ARGS)

# Media benchmark (not a test): the media worker's peak RSS with 10 concurrent 100 MiB documents
# in one invocation, streamed from a fake Graph API into the local endpoint (limit: < 128 MB).
.PHONY: bench-media
bench-media: bootstrap
	cargo build --release -p bench --bin media-rss
	target/release/media-rss $(MEDIA_RSS_ARGS)

# Privacy benchmark (not a test): DynamoDB/S3/SQS requests per erased and per retention-deleted
# item, on its own local endpoint. MESSAGES=100000 for the issue's large contact.
.PHONY: bench-privacy
bench-privacy: bootstrap
	cargo run --release -p e2e-tests --example privacy_bench -- --messages $(or $(MESSAGES),10000)

# Console benchmark (not a test): bytes the console ships and time from navigation to an
# interactive inbox of 60 conversations, medians over fresh browser contexts (release stack).
.PHONY: bench-console
bench-console:
	cargo build -q --release --bin devstack --bin crmctl
	CONSOLE_STACK_PROFILE=release bash console/tests/run.sh --bench
