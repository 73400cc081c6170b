"""Draw per-subgraph overhead (map_cpu) against N for tributary, bare tokio
and the peers as a hand-written SVG (log-log), from the runner's and the
peers' JSON lines. No dependencies."""

import json
import math
import sys

from compare import load

W, H = 720, 440
LEFT, RIGHT, TOP, BOTTOM = 70, 170, 30, 50
COLORS = {
    "tributary (run)": "#1f77b4",
    "tributary (map_states)": "#17becf",
    "bare tokio": "#2ca02c",
    "asyncio": "#7f7f7f",
    "burr": "#ff7f0e",
    "langgraph": "#d62728",
}


def series(tributary_lines, peer_lines):
    out = {}
    for m in tributary_lines:
        if m.get("scenario") != "map_cpu":
            continue
        n = m["params"]["n"]
        name = f"tributary ({m.get('variant', 'run')})"
        out.setdefault(name, []).append((n, m["median"]))
        if m.get("variant", "run") == "run":
            out.setdefault("bare tokio", []).append((n, m["baseline"]["median"]))
    for p in peer_lines:
        if p["scenario"] == "map_cpu":
            out.setdefault(p["peer"], []).append((p["n"], p["us_per_subgraph"]))
    return {k: sorted(v) for k, v in out.items()}


def svg(data, title):
    xs = [n for pts in data.values() for n, _ in pts]
    ys = [y for pts in data.values() for _, y in pts]
    x0, x1 = math.floor(math.log10(min(xs))), math.ceil(math.log10(max(xs)))
    y0, y1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
    x1 = max(x1, x0 + 1)
    y1 = max(y1, y0 + 1)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(n):
        return LEFT + (math.log10(n) - x0) / (x1 - x0) * pw

    def py(y):
        return TOP + ph - (math.log10(y) - y0) / (y1 - y0) * ph

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{LEFT}" y="18" font-size="14">{title}</text>',
    ]
    for e in range(y0, y1 + 1):
        y = py(10**e)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">{10**e:g}</text>')
    for e in range(x0, x1 + 1):
        x = px(10**e)
        parts.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + ph}" stroke="#ddd"/>')
        parts.append(f'<text x="{x:.1f}" y="{TOP + ph + 18}" text-anchor="middle">{10**e:,}</text>')
    parts.append(f'<text x="{LEFT + pw / 2}" y="{H - 10}" text-anchor="middle">subgraphs (N)</text>')
    parts.append(
        f'<text x="16" y="{TOP + ph / 2}" text-anchor="middle" transform="rotate(-90 16 {TOP + ph / 2})">'
        "µs per subgraph (log)</text>"
    )
    for i, (name, pts) in enumerate(data.items()):
        color = COLORS.get(name, "#000")
        path = " ".join(f"{px(n):.1f},{py(y):.1f}" for n, y in pts)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for n, y in pts:
            parts.append(f'<circle cx="{px(n):.1f}" cy="{py(y):.1f}" r="3" fill="{color}"/>')
        ly = TOP + 10 + i * 20
        parts.append(f'<line x1="{W - RIGHT + 15}" y1="{ly}" x2="{W - RIGHT + 35}" y2="{ly}" stroke="{color}" stroke-width="2"/>')
        parts.append(f'<text x="{W - RIGHT + 40}" y="{ly + 4}">{name}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(tributary_path, peers_path, out):
    data = series(load(tributary_path), load(peers_path) if peers_path != "-" else [])
    with open(out, "w") as f:
        f.write(svg(data, "map_cpu: per-subgraph overhead, two trivial actions"))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
