"""Plots for docs/benchmarks.md from the JSON lines of `herald-bench run --out`.

benchmarks-rss.png      S1: server RSS (MiB) against open sessions, one line per server and protocol
benchmarks-latency.png  S3: p50 and p99 latency (ms) against pushes per second
benchmarks-s5.png       S5: total RSS (nodes + Redis) against sessions, and during the hold
benchmarks-s6.png       S6: cross-node push latency against rate, and fan-out deliveries/s
Each is drawn only when the results hold its scenario (a cluster run leaves S1's and S3's alone).
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

results, outdir = sys.argv[1], sys.argv[2]
last = {}
for line in open(results):
    line = line.strip()
    if not line:
        continue
    r = json.loads(line)
    last[(r["scenario"], r["server"], r["label"])] = r

colors = {"herald": "tab:blue", "rabbitmq": "tab:orange", "ejabberd": "tab:green"}
styles = {"stomp-tcp": "-", "stomp-ws": "--", "xmpp-ws": "-.", "bosh": ":", "inproc": (0, (1, 1))}

scenarios = {sc for (sc, _, _) in last}
colors["socketio"] = "tab:red"

if "s1" in scenarios:
    fig, ax = plt.subplots(figsize=(8, 5))
    for (sc, server, label), r in sorted(last.items()):
        if sc != "s1":
            continue
        xs = [0] + [p["ok"] for p in r["points"]]
        ys = [r["base_rss_kib"] / 1024] + [p["rss_kib"] / 1024 for p in r["points"]]
        ax.plot(xs, ys, marker="o", color=colors.get(server), linestyle=styles.get(label, "-"),
                label=f"{server} {label}: {r['bytes_per_session'] / 1024:.1f} KiB/session")
    ax.set_xlabel("idle authenticated sessions")
    ax.set_ylabel("server RSS (MiB, VmRSS)")
    ax.set_title("S1: server memory against sessions")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, "benchmarks-rss.png"), dpi=110)

if "s3" in scenarios:
    fig, ax = plt.subplots(figsize=(8, 5))
    for (sc, server, label), r in sorted(last.items()):
        if sc != "s3":
            continue
        # A rate at which nothing arrived has no latency: leave the point out
        # (its loss is in the table) rather than draw it at zero.
        runs = [x for x in r["runs"] if x.get("lost", 0) < x.get("sent", 0)]
        xs = [x["rate"] for x in runs]
        c = colors.get(server)
        ls = styles.get(label, "-")
        ax.plot(xs, [x["p99_ms"] for x in runs], marker="o", color=c, linestyle=ls, label=f"{server} {label} p99")
        ax.plot(xs, [x["p50_ms"] for x in runs], marker=".", color=c, linestyle=ls, alpha=0.45, label=f"{server} {label} p50")
    ax.axhline(10, color="red", linewidth=0.8, alpha=0.6)
    ax.text(ax.get_xlim()[0], 10, " target p99 10 ms", color="red", fontsize=8, va="bottom")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered pushes per second (random users of 10k)")
    ax.set_ylabel("end-to-end latency (ms)")
    ax.set_title("S3: targeted push latency against rate")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, "benchmarks-latency.png"), dpi=110)

if "s5" in scenarios:
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 5))
    for (sc, server, label), r in sorted(last.items()):
        if sc != "s5":
            continue
        pts = r["points"]
        xs = [0] + [p["ok"] for p in pts]
        nodes = [r["base_rss_nodes_kib"] / 1024] + [p["rss_nodes_kib"] / 1024 for p in pts]
        redis = [r["base_rss_redis_kib"] / 1024] + [p["rss_redis_kib"] / 1024 for p in pts]
        ax.stackplot(xs, nodes, redis, labels=[f"{r['nodes']} Herald nodes", "Redis"], alpha=0.7,
                     colors=["tab:blue", "tab:red"])
        ax.text(xs[-1], nodes[-1] + redis[-1], f" {(nodes[-1] + redis[-1]):.0f} MiB\n {r['bytes_per_session']:.0f} B/session",
                fontsize=8, ha="right", va="bottom")
        hold = r["hold"]
        ts = [h["t"] for h in hold]
        bx.plot(ts, [(h["rss_nodes_kib"] + h["rss_redis_kib"]) / 1024 for h in hold], marker="o", color="tab:blue",
                label="total RSS (MiB)")
        b2 = bx.twinx()
        b2.plot(ts, [h["closed"] for h in hold], marker="x", color="tab:red", label="sessions closed")
        b2.set_ylabel("sessions closed (cumulative)")
        b2.set_ylim(bottom=0, top=max(10, max([h["closed"] for h in hold] + [0]) * 1.2))
    ax.axhline(2048, color="red", linewidth=0.8, alpha=0.6)
    ax.text(0, 2048, " target 2 GB", color="red", fontsize=8, va="bottom")
    ax.set_xlabel("idle authenticated sessions (STOMP/TCP, subscribed, heart-beats 10 s)")
    ax.set_ylabel("RSS (MiB, VmRSS summed)")
    ax.set_title("S5: memory of the whole cluster against sessions")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    bx.set_ylim(bottom=0, top=2200)
    bx.set_xlabel("seconds into the hold")
    bx.set_ylabel("total RSS (MiB)")
    bx.set_title("S5: the hold")
    bx.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, "benchmarks-s5.png"), dpi=110)

if "s6" in scenarios:
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 5))
    bars = []
    for (sc, server, label), r in sorted(last.items()):
        if sc != "s6":
            continue
        runs = [x for x in r["push"] if x.get("recv", 0) > 0]
        c = colors.get(server)
        ls = "-" if r["cross"] else ":"
        xs = [x["rate"] for x in runs]
        ax.plot(xs, [x["p99_ms"] for x in runs], marker="o", color=c, linestyle=ls, label=f"{server} {label} p99")
        ax.plot(xs, [x["p50_ms"] for x in runs], marker=".", color=c, linestyle=ls, alpha=0.45,
                label=f"{server} {label} p50")
        bars.append((f"{server}\n{label}", r["fanout"]["deliveries_per_s"], c, r["cross"]))
    ax.axhline(20, color="red", linewidth=0.8, alpha=0.6)
    ax.text(ax.get_xlim()[0], 20, " target p99 20 ms (cross-node, 20k/s)", color="red", fontsize=8, va="bottom")
    ax.set_yscale("log")
    ax.set_xlabel("offered pushes per second (random users)")
    ax.set_ylabel("end-to-end latency (ms)")
    ax.set_title("S6: pushes, publisher and subscribers on different nodes")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    names = [b[0] for b in bars]
    vals = [b[1] for b in bars]
    bx.bar(names, vals, color=[b[2] for b in bars], hatch=None)
    for i, b in enumerate(bars):
        if not b[3]:
            bx.patches[i].set_alpha(0.45)
    for i, v in enumerate(vals):
        bx.text(i, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=8)
    bx.set_ylabel("deliveries per second (burst to one topic/room)")
    bx.set_title("S6: fan-out")
    bx.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, "benchmarks-s6.png"), dpi=110)

print("plots written to", outdir)
