#!/usr/bin/env python3
"""Completion time against the number of agents, from swarm-bench's --json output.

    python3 tests/bench/plot.py OUT.png RUN.txt [RUN.txt ...]

Each RUN.txt is the output of one `swarm-bench ... --json` run; its last line is the JSON
object read here. Plots, per N, the swarm's p50 and last agent, the one-server baseline's
last agent, and the bound F/r (and N*F/u for one server). Needs matplotlib
(`pip install matplotlib`); nothing in CI runs it.
"""
import json
import sys


def last_json(path):
    with open(path) as f:
        lines = [l for l in f.read().splitlines() if l.startswith("{")]
    if not lines:
        sys.exit(f"{path}: no JSON line (was swarm-bench run with --json?)")
    return json.loads(lines[-1])


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted((last_json(p) for p in sys.argv[2:]), key=lambda r: r["agents"])
    n = [r["agents"] for r in runs]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(n, [r["max_s"] for r in runs], "o-", label="swarm, last agent")
    ax.plot(n, [r["p50_s"] for r in runs], "o--", label="swarm, p50")
    ax.plot(n, [r["bound_s"] for r in runs], "k:", label="bound F/r")
    base = [(r["agents"], r["baseline_max_s"]) for r in runs if r.get("baseline_max_s")]
    if base:
        ax.plot(*zip(*base), "s-", label="one server, last agent")
        ax.plot(n, [r["one_server_bound_s"] for r in runs], "k-.", lw=0.8,
                label="one server bound N·F/r")
    size = runs[0]["size_bytes"] / 2**20
    rate = runs[0]["rate_bytes_per_s"] / 2**20
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(n, [str(x) for x in n])
    ax.set_xlabel("agents pulling at once")
    ax.set_ylabel("seconds")
    ax.set_title(f"{size:.0f} MiB blob, every host capped at {rate:.0f} MiB/s")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(sys.argv[1])


if __name__ == "__main__":
    main()
