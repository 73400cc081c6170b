#!/usr/bin/env bash
# The map_cpu and map_io workloads in Burr (MapStates), LangGraph (Send) and
# plain asyncio, and one-step tasks in Ray (for the cluster scenario), next
# to tributary's runner, then the ratio of each peer to
# tributary and the overhead plot. Not part of CI.
#
#   benches/peers/run.sh            # sizes 1k and 10k for the peers
#   PEER_SIZES=1000 benches/peers/run.sh
set -euo pipefail
cd "$(dirname "$0")"
ROOT="$(cd ../.. && pwd)"
VENV="${PEERS_VENV:-$PWD/.venv}"
OUT="${PEERS_OUT:-$PWD/results}"
SIZES="${PEER_SIZES:-1000,10000}"
REPEATS="${PEER_REPEATS:-3}"

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q -r requirements.txt
PY="$VENV/bin/python"
mkdir -p "$OUT"

echo "== tributary (map_cpu, map_io)" >&2
(cd "$ROOT" && cargo run -q --release -p tributary-benches -- map_cpu map_io --quick) \
  > "$OUT/tributary.jsonl"

: > "$OUT/peers.jsonl"
echo "== asyncio" >&2
"$PY" asyncio_map.py --n "$SIZES,100000" --repeats "$REPEATS" >> "$OUT/peers.jsonl"
echo "== burr" >&2
"$PY" burr_map.py --n "$SIZES" --repeats "$REPEATS" >> "$OUT/peers.jsonl" \
  || echo "burr failed: see above" >&2
echo "== langgraph" >&2
"$PY" langgraph_map.py --n "$SIZES" --repeats "$REPEATS" >> "$OUT/peers.jsonl" \
  || echo "langgraph failed: see above" >&2

echo "== ray (one-step tasks, next to the cluster scenario)" >&2
"$PY" ray_tasks.py --n "$SIZES" --repeats "$REPEATS" >> "$OUT/peers.jsonl" \
  || echo "ray failed: see above" >&2

"$PY" compare.py "$OUT/tributary.jsonl" "$OUT/peers.jsonl"
"$PY" plot.py "$OUT/tributary.jsonl" "$OUT/peers.jsonl" "$ROOT/docs/benchmarks-overhead.svg"
