"""Plots for docs/benchmarks.md from the JSON lines of `herald-bench run --out`.

benchmarks-rss.png      S1: server RSS (MiB) against open sessions, one line per server and protocol
benchmarks-latency.png  S3: p50 and p99 latency (ms) against pushes per second
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
print("plots written to", outdir)
