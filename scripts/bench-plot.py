#!/usr/bin/env python3
"""Draws the latency percentiles of a `scripts/bench-vs-nats --json FILE` run as an SVG: one panel
per workload that measures latency, nats-server's and the hub's curves over the percentiles
p50, p90, p99, p99.9 and max (the median of the runs at each), on HdrHistogram's axis (the
distance to 100 %, logarithmic). No third-party packages.

    python3 scripts/bench-plot.py RUN.json OUT.svg [WORKLOAD,WORKLOAD...]
"""

import json
import math
import statistics
import sys
from collections import defaultdict

PERCENTILES = [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9), ("max", 99.99)]
COLORS = {"nats": "#1f77b4", "relay": "#d62728"}
LABELS = {"nats": "nats-server", "relay": "Relay hub"}
PANEL_W, PANEL_H, MARGIN = 420, 240, 56


def x_of(percentile):
    """HdrHistogram's percentile axis, 1 / (1 - p) on a log scale, as a fraction: p50 at 0, 99.99 % at 1."""
    def distance(p):
        return math.log10(1 / (1 - p / 100))
    return (distance(percentile) - distance(50)) / (distance(99.99) - distance(50))


def curves(runs):
    """workload -> side -> [(percentile, median µs)]."""
    values = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for run in runs:
        latency = run.get("latencyMicroseconds")
        if not latency or "side" not in run:
            continue
        for key, percentile in PERCENTILES:
            if key in latency:
                values[run["workload"]][run["side"]][percentile].append(latency[key])
    return {
        workload: {side: sorted((p, statistics.median(v)) for p, v in points.items()) for side, points in sides.items()}
        for workload, sides in values.items()
    }


def panel(workload, sides, left, top):
    top_value = max(v for points in sides.values() for _, v in points) or 1
    ceiling = 10 ** math.ceil(math.log10(top_value))
    floor = max(1, min(v for points in sides.values() for _, v in points))
    bottom = 10 ** math.floor(math.log10(floor))

    def xy(percentile, value):
        x = left + MARGIN + x_of(percentile) * (PANEL_W - MARGIN - 10)
        fraction = (math.log10(max(value, bottom)) - math.log10(bottom)) / (math.log10(ceiling) - math.log10(bottom) or 1)
        return x, top + PANEL_H - 30 - fraction * (PANEL_H - 60)

    parts = [f'<text x="{left + MARGIN}" y="{top + 16}" font-size="13" font-weight="bold">{workload}</text>']
    # Axes and grid.
    x0, y0 = xy(50, bottom)
    x1, _ = xy(99.99, bottom)
    _, y1 = xy(50, ceiling)
    parts.append(f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#999"/>')
    parts.append(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#999"/>')
    decade = bottom
    while decade <= ceiling:
        _, y = xy(50, decade)
        parts.append(f'<line x1="{x0}" y1="{y}" x2="{x1}" y2="{y}" stroke="#eee"/>')
        parts.append(f'<text x="{x0 - 6}" y="{y + 4}" font-size="10" text-anchor="end">{decade:,.0f} µs</text>')
        decade *= 10
    for key, percentile in PERCENTILES:
        x, _ = xy(percentile, bottom)
        parts.append(f'<text x="{x}" y="{y0 + 14}" font-size="10" text-anchor="middle">{key}</text>')
    for side, points in sorted(sides.items()):
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(p, v) for p, v in points))
        parts.append(f'<polyline points="{path}" fill="none" stroke="{COLORS.get(side, "#333")}" stroke-width="2"/>')
        for p, v in points:
            x, y = xy(p, v)
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{COLORS.get(side, "#333")}"/>')
    return parts


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    with open(sys.argv[1]) as file:
        run = json.load(file)
    data = curves(run["runs"])
    if len(sys.argv) == 4:
        wanted = sys.argv[3].split(",")
        data = {name: data[name] for name in wanted if name in data}
    if not data:
        sys.exit("no latency figures in " + sys.argv[1])
    columns = 2
    rows = math.ceil(len(data) / columns)
    width, height = columns * PANEL_W + 20, rows * PANEL_H + 60
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="10" y="18" font-size="12">Latency by percentile, median of the runs: {run.get("machine", "")}</text>']
    for index, side in enumerate(("nats", "relay")):
        parts.append(f'<rect x="{10 + index * 130}" y="28" width="14" height="4" fill="{COLORS[side]}"/>')
        parts.append(f'<text x="{28 + index * 130}" y="34" font-size="11">{LABELS[side]}</text>')
    for index, workload in enumerate(data):
        parts += panel(workload, data[workload], (index % columns) * PANEL_W, 40 + (index // columns) * PANEL_H)
    parts.append("</svg>")
    with open(sys.argv[2], "w") as file:
        file.write("\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
