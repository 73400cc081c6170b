# Convenience recipes; each is a plain cargo command you can run without just.

# Run the whole test suite (as CI does)
test:
    cargo test --workspace

# Formatting and lints, as CI checks them
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Run tributary's main job on the embedded defaults
demo:
    cargo run -p tributary-examples --example deep_research

# Run the quick benchmark suite (one JSON line per measurement; see docs/benchmarks.md)
bench:
    cargo run --release -p tributary-benches -- all --quick

# Run the same workloads in Burr, LangGraph and asyncio and compare (needs python3 and PyPI)
bench-peers:
    bash benches/peers/run.sh

# Start the local services the tests use (Redis, NATS JetStream) if they are down
services:
    bash .ci/run --services-only
