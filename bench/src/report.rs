//! `herald-bench report results.jsonl`: the markdown tables of
//! docs/benchmarks.md, Herald/peer ratios and the targets, from the
//! JSON lines `run --out` appended (the last line for a key wins).

use std::io;
use std::path::PathBuf;

use clap::Args;
use serde_json::Value;

#[derive(Args)]
pub struct ReportArgs {
    /// The JSON-lines file written by `run --out`.
    pub results: PathBuf,
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// The peer that speaks the same protocol as Herald does in this row.
fn peer_for(proto: &str) -> &'static str {
    match proto {
        "stomp-tcp" | "stomp-ws" => "rabbitmq",
        _ => "ejabberd",
    }
}

/// Herald/peer; below 0.1 as a fraction (`1/3783`), which stays readable
/// where two decimals would print 0.00.
fn ratio(h: f64, p: f64) -> String {
    if !(h.is_finite() && p.is_finite() && p > 0.0) {
        return "n/a".into();
    }
    let r = h / p;
    if r > 0.0 && r < 0.1 {
        format!("1/{:.0}", 1.0 / r)
    } else {
        format!("{r:.2}×")
    }
}

struct Results(Vec<Value>);

impl Results {
    /// Last result for (scenario, server, label).
    fn get(&self, scenario: &str, server: &str, label: &str) -> Option<&Value> {
        self.0.iter().rev().find(|r| r["scenario"] == scenario && r["server"] == server && r["label"] == label)
    }

    /// Distinct (server, label) pairs of a scenario, in first-seen order.
    fn rows(&self, scenario: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for r in self.0.iter().filter(|r| r["scenario"] == scenario) {
            let k = (r["server"].as_str().unwrap_or("").to_owned(), r["label"].as_str().unwrap_or("").to_owned());
            if !out.contains(&k) {
                out.push(k);
            }
        }
        out
    }
}

pub fn main(a: ReportArgs) -> io::Result<()> {
    let text = std::fs::read_to_string(&a.results)?;
    let res = Results(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect());
    let mut targets: Vec<String> = Vec::new();
    // A durability run (`compare.sh durability`) has no S1-S4 rows.
    if ["s1", "s2", "s3", "s4"].iter().any(|s| !res.rows(s).is_empty()) {
        scenarios(&res, &mut targets);
    }
    durability(&res, &mut targets);
    if !res.rows("s5").is_empty() {
        s5(&res, &mut targets);
    }
    if !res.rows("s6").is_empty() {
        s6(&res, &mut targets);
    }
    println!("\n### Targets\n");
    for t in &targets {
        println!("- {t}");
    }
    let loads: Vec<String> = res.0.iter().filter_map(|r| r["loadavg_start"].as_str().map(str::to_owned)).collect();
    if let (Some(a), Some(b)) = (loads.first(), loads.last()) {
        println!("\nLoad average (1, 5, 15 min) at the start of the first and last runs: {a}; {b}.");
    }
    Ok(())
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

/// S1-S4.
fn scenarios(res: &Results, targets: &mut Vec<String>) {
    println!("### S1 — idle sessions\n");
    println!("| server | protocol | RSS per session (slope) | RSS at each N (MiB) | idle CPU at N max | sessions ok / failed | Herald / peer (RSS per session) |");
    println!("|---|---|---|---|---|---|---|");
    for (server, label) in res.rows("s1") {
        let r = res.get("s1", &server, &label).unwrap();
        let bps = f(&r["bytes_per_session"]);
        let pts: Vec<String> = r["points"]
            .as_array()
            .map(|p| {
                p.iter()
                    .map(|p| format!("{}k: {:.0}", p["n"].as_u64().unwrap_or(0) / 1000, f(&p["rss_kib"]) / 1024.0))
                    .collect()
            })
            .unwrap_or_default();
        let peer = if server == "herald" {
            let p = peer_for(&label);
            res.get("s1", p, &label)
                .map(|pr| format!("{} vs {p}", ratio(bps, f(&pr["bytes_per_session"]))))
                .unwrap_or_else(|| "—".into())
        } else {
            "—".into()
        };
        println!(
            "| {server} | {label} | {:.0} B ({:.2} KiB) | {} | {:.1} ms/s ({} sessions) | {} / {} | {peer} |",
            bps,
            bps / 1024.0,
            pts.join(", "),
            f(&r["idle_cpu_ms_per_s"]),
            r["n_max"],
            r["ok"],
            r["fail"]
        );
        if server == "herald" && (label == "stomp-ws" || label == "bosh") {
            let limit = if label == "bosh" { 6.0 } else { 4.0 };
            targets.push(format!(
                "S1 {label}: ≤ {limit} KiB per idle session — {:.2} KiB: {}",
                bps / 1024.0,
                mark(bps <= limit * 1024.0)
            ));
        }
    }

    println!("\n### S2 — fan-out to one topic\n");
    println!("| server | protocol | subscribers | deliveries/s (burst) | p50 / p99 latency (paced) | paced rate | lost | Herald / peer (deliveries/s) |");
    println!("|---|---|---|---|---|---|---|---|");
    for (server, label) in res.rows("s2") {
        let r = res.get("s2", &server, &label).unwrap();
        let d = f(&r["deliveries_per_s"]);
        let peer = if server == "herald" {
            res.get("s2", "rabbitmq", &label)
                .map(|p| format!("{} vs rabbitmq", ratio(d, f(&p["deliveries_per_s"]))))
                .unwrap_or_else(|| "—".into())
        } else {
            "—".into()
        };
        let lost = r["burst_expected"].as_u64().unwrap_or(0).saturating_sub(r["burst_recv"].as_u64().unwrap_or(0))
            + (r["paced_sent"].as_u64().unwrap_or(0) * r["subscribers"].as_u64().unwrap_or(0))
                .saturating_sub(r["paced_recv"].as_u64().unwrap_or(0));
        println!(
            "| {server} | {label} | {} | {:.0} | {:.1} / {:.1} ms | {} msg/s ({:.0} deliveries/s) | {lost} | {peer} |",
            r["subscribers"],
            d,
            f(&r["p50_ms"]),
            f(&r["p99_ms"]),
            r["paced_rate"],
            f(&r["paced_deliveries_per_s"])
        );
        if server == "herald" {
            if let Some(p) = res.get("s2", "rabbitmq", &label) {
                let x = d / f(&p["deliveries_per_s"]);
                targets.push(format!("S2: ≥ 10× RabbitMQ's deliveries/s — {x:.2}×: {}", mark(x >= 10.0)));
            }
            let p99 = f(&r["p99_ms"]);
            targets.push(format!("S2: p99 < 50 ms — {p99:.1} ms: {}", mark(p99 < 50.0)));
        }
    }

    println!("\n### S3 — targeted pushes to 10k users\n");
    println!("| server | publisher / protocol | offered /s | sent /s | p50 | p99 | max | lost | Herald / peer (p99) |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (server, label) in res.rows("s3") {
        let r = res.get("s3", &server, &label).unwrap();
        for run in r["runs"].as_array().cloned().unwrap_or_default() {
            let rate = run["rate"].as_u64().unwrap_or(0);
            let p99 = f(&run["p99_ms"]);
            let peer = if server == "herald" {
                let proto = r["proto"].as_str().unwrap_or("");
                let p = peer_for(proto);
                res.get("s3", p, proto)
                    .and_then(|pr| pr["runs"].as_array().and_then(|rs| rs.iter().find(|x| x["rate"] == rate)).cloned())
                    .map(|pr| format!("{} vs {p}", ratio(p99, f(&pr["p99_ms"]))))
                    .unwrap_or_else(|| "—".into())
            } else {
                "—".into()
            };
            println!(
                "| {server} | {label} | {rate} | {:.0} | {:.2} ms | {:.2} ms | {:.1} ms | {} of {} | {peer} |",
                f(&run["achieved"]),
                f(&run["p50_ms"]),
                p99,
                f(&run["max_ms"]),
                run["lost"],
                run["sent"]
            );
            if server == "herald" && rate == 50_000 {
                let lost = run["lost"].as_u64().unwrap_or(1);
                let reached = f(&run["achieved"]) >= 0.95 * rate as f64;
                targets.push(format!(
                    "S3 {label}: p99 < 10 ms at 50k pushes/s, nothing lost — p99 {p99:.2} ms, {lost} lost, {:.0}/s sent: {}",
                    f(&run["achieved"]),
                    mark(p99 < 10.0 && lost == 0 && reached)
                ));
            }
        }
    }

    println!("\n### S4 — churn (connect, authenticate, subscribe, disconnect)\n");
    println!(
        "| server | protocol | logins/s | login p50 / p99 | server CPU | in flight | ok / failed | Herald / ejabberd |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let ej = res.get("s4", "ejabberd", "xmpp-ws").map(|r| f(&r["logins_per_s"]));
    for (server, label) in res.rows("s4") {
        let r = res.get("s4", &server, &label).unwrap();
        let l = f(&r["logins_per_s"]);
        let peer = match (server.as_str(), ej) {
            ("herald", Some(e)) => ratio(l, e),
            _ => "—".into(),
        };
        println!(
            "| {server} | {label} | {:.0} | {:.1} / {:.1} ms | {:.0} % | {} | {} / {} | {peer} |",
            l,
            f(&r["p50_ms"]),
            f(&r["p99_ms"]),
            f(&r["server_cpu"]) * 100.0,
            r["concurrency"],
            r["ok"],
            r["fail"]
        );
        if server == "herald" {
            if let Some(e) = ej {
                targets.push(format!(
                    "S4 {label}: ≥ 3× ejabberd's logins/s (xmpp-ws) — {:.2}×: {}",
                    l / e,
                    mark(l >= 3.0 * e)
                ));
            }
        }
    }
}

/// D1 and R1 (issue 15), when the results have them.
fn durability(res: &Results, targets: &mut Vec<String>) {
    let phase = |server: &str, name: &str| -> Option<Value> {
        let r = res.get("d1", server, "stomp-tcp")?;
        r["phases"].as_array()?.iter().find(|p| p["phase"] == name).cloned()
    };
    if !res.rows("d1").is_empty() {
        println!("\n### D1 — persistent SENDs with receipts to a durable queue\n");
        println!("| server | phase | publishers × window | confirmed msgs/s | receipt p50 / p99 | confirmed / stored / lost | journal syncs (tickets per sync) | Herald / RabbitMQ (msgs/s) |");
        println!("|---|---|---|---|---|---|---|---|");
        for (server, _) in res.rows("d1") {
            for name in ["serial", "pipelined"] {
                let Some(p) = phase(&server, name) else { continue };
                let rate = f(&p["msgs_per_s"]);
                let peer = phase("rabbitmq", name).map(|q| f(&q["msgs_per_s"]));
                let cell = match (server.as_str(), peer) {
                    ("herald", Some(q)) => ratio(rate, q),
                    _ => "—".into(),
                };
                let syncs = match (p["syncs"].as_u64(), p["tickets"].as_u64()) {
                    (Some(s), Some(t)) if s > 0 => format!("{s} ({:.1})", t as f64 / s as f64),
                    _ => "—".into(),
                };
                println!(
                    "| {server} | {name} | {} × {} | {rate:.0} | {:.2} / {:.2} ms | {} / {} / {} | {syncs} | {cell} |",
                    p["publishers"],
                    p["window"],
                    f(&p["p50_ms"]),
                    f(&p["p99_ms"]),
                    p["confirmed"],
                    p["stored"],
                    p["lost"]
                );
                if server == "herald" && name == "pipelined" {
                    if let Some(q) = peer {
                        targets.push(format!(
                            "D1: confirmed persistent throughput ≥ 3× RabbitMQ's — {:.2}×: {}",
                            rate / q,
                            mark(rate >= 3.0 * q)
                        ));
                    }
                }
            }
        }
    }
    if !res.rows("r1").is_empty() {
        println!("\n### R1 — recovery of missed messages (SUBSCRIBE from an offset to the last one)\n");
        println!("| server | from | missed | p50 | p99 | max | rounds complete | out of order | RECEIPT x-recovered |");
        println!("|---|---|---|---|---|---|---|---|---|");
        for (server, label) in res.rows("r1") {
            let r = res.get("r1", &server, &label).unwrap();
            let from = if server == "rabbitmq" { "stream queue" } else { "feed history" };
            println!(
                "| {server} | {from} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {} of {} | {} | {} |",
                r["missed"],
                f(&r["p50_ms"]),
                f(&r["p99_ms"]),
                f(&r["max_ms"]),
                r["complete"],
                r["repeats"],
                r["out_of_order"],
                r["recovered"]
            );
            if server == "herald" {
                let p99 = f(&r["p99_ms"]);
                let whole = r["complete"] == r["repeats"];
                targets.push(format!(
                    "R1: {} missed messages recovered in < 50 ms (p99) — {p99:.2} ms, {} of {} rounds complete: {}",
                    r["missed"],
                    r["complete"],
                    r["repeats"],
                    mark(p99 < 50.0 && whole)
                ));
            }
        }
    }
}

fn opt_us(v: &Value) -> String {
    v.as_f64().map(|x| format!("{x:.2} µs")).unwrap_or_else(|| "n/a".into())
}

fn mib(kib: &Value) -> f64 {
    f(kib) / 1024.0
}

/// S5 (issue 17): idle sessions over several nodes plus Redis.
fn s5(res: &Results, targets: &mut Vec<String>) {
    println!("\n### S5 — idle sessions over several nodes\n");
    println!("| server | protocol | nodes | sessions ok / failed | logins/s | total RSS (nodes + Redis) | per session (total ÷ sessions) | per session (slope) | closed during the hold | unreached after it | CPU while idle (nodes, Redis) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (server, label) in res.rows("s5") {
        let r = res.get("s5", &server, &label).unwrap();
        let total = mib(&r["total_rss_kib"]);
        println!(
            "| {server} | {} | {} | {} / {} | {:.0} | {:.0} MiB ({:.0} + {:.0}) | {:.0} B | {:.0} B | {} over {:.0} s | {} | {:.0} % + {:.1} % of a core |",
            r["proto"].as_str().unwrap_or(""),
            r["nodes"],
            r["ok"],
            r["fail"],
            f(&r["logins_per_s"]),
            total,
            mib(&r["rss_nodes_kib"]),
            mib(&r["rss_redis_kib"]),
            f(&r["bytes_per_session"]),
            f(&r["bytes_per_session_slope"]),
            r["closed"],
            f(&r["hold_secs"]),
            r["unreached"].as_u64().map(|u| u.to_string()).unwrap_or_else(|| "not checked".into()),
            f(&r["idle_cpu_share"]) * 100.0,
            f(&r["redis_idle_cpu_share"]) * 100.0,
        );
        if server == "herald" {
            let lost = r["closed"].as_u64().unwrap_or(0) + r["unreached"].as_u64().unwrap_or(0);
            let held = r["ok"].as_u64().unwrap_or(0);
            targets.push(format!(
                "S5: {} sessions held {:.0} s, none lost, ≤ 2 GB total RSS — {held} held ({} failed), {lost} lost, {total:.0} MiB: {}",
                r["sessions"],
                f(&r["hold_secs"]),
                r["fail"],
                mark(held as f64 >= f(&r["sessions"]) && lost == 0 && total <= 2048.0 && f(&r["hold_secs"]) >= 300.0)
            ));
        }
    }
}

/// S6 (issue 17): cross-node pushes and fan-out, Herald against Socket.IO.
fn s6(res: &Results, targets: &mut Vec<String>) {
    println!("\n### S6 — pushes across nodes\n");
    println!("| server | setup | offered /s | sent /s | p50 | p99 | max | lost | server CPU / delivery | Redis CPU / delivery | Herald / Socket.IO (p99) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let rows = res.rows("s6");
    for (server, label) in &rows {
        let r = res.get("s6", server, label).unwrap();
        let peer = if server == "herald" { res.get("s6", "socketio", label) } else { None };
        for run in r["push"].as_array().cloned().unwrap_or_default() {
            let versus = peer
                .and_then(|p| p["push"].as_array().and_then(|a| a.iter().find(|x| x["rate"] == run["rate"]).cloned()))
                .filter(|x| x["recv"].as_u64().unwrap_or(0) > 0)
                .map(|x| ratio(f(&run["p99_ms"]), f(&x["p99_ms"])))
                .unwrap_or_else(|| "—".into());
            println!(
                "| {server} | {label} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.1} ms | {} of {} | {} | {} | {versus} |",
                run["rate"],
                f(&run["achieved"]),
                f(&run["p50_ms"]),
                f(&run["p99_ms"]),
                f(&run["max_ms"]),
                run["lost"],
                run["sent"],
                opt_us(&run["servers_cpu_us_per_delivery"]),
                opt_us(&run["redis_cpu_us_per_delivery"]),
            );
            if server == "herald" && r["cross"] == true && run["rate"].as_u64() == Some(20000) {
                let p99 = f(&run["p99_ms"]);
                let lost = run["lost"].as_u64().unwrap_or(0);
                targets.push(format!(
                    "S6: cross-node push p99 < 20 ms at 20k pushes/s — p99 {p99:.2} ms, {lost} lost, {:.0}/s sent: {}",
                    f(&run["achieved"]),
                    mark(p99 < 20.0 && lost == 0 && f(&run["achieved"]) >= 19_000.0)
                ));
            }
        }
    }
    println!("\n### S6 — fan-out across nodes\n");
    println!("| server | setup | subscribers | deliveries/s (burst) | lost in burst | p50 / p99 (paced) | paced rate | server CPU / delivery | Redis CPU / delivery | Herald / Socket.IO (deliveries/s) |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (server, label) in &rows {
        let r = res.get("s6", server, label).unwrap();
        let fo = &r["fanout"];
        let peer = if server == "herald" { res.get("s6", "socketio", label) } else { None };
        let versus = peer
            .map(|p| ratio(f(&fo["deliveries_per_s"]), f(&p["fanout"]["deliveries_per_s"])))
            .unwrap_or_else(|| "—".into());
        println!(
            "| {server} | {label} | {} | {:.0} | {} of {} | {:.1} / {:.1} ms | {} msg/s | {} | {} | {versus} |",
            r["subscribers"],
            f(&fo["deliveries_per_s"]),
            fo["burst_expected"].as_u64().unwrap_or(0).saturating_sub(fo["burst_recv"].as_u64().unwrap_or(0)),
            fo["burst_expected"],
            f(&fo["p50_ms"]),
            f(&fo["p99_ms"]),
            fo["paced_rate"],
            opt_us(&fo["servers_cpu_us_per_delivery"]),
            opt_us(&fo["redis_cpu_us_per_delivery"]),
        );
        if server == "herald" && r["cross"] == true {
            if let Some(p) = peer {
                let x = f(&fo["deliveries_per_s"]) / f(&p["fanout"]["deliveries_per_s"]);
                targets.push(format!(
                    "S6: cross-node fan-out deliveries/s ≥ 5× Socket.IO + Redis adapter's — {:.0} against {:.0}: {x:.2}×: {}",
                    f(&fo["deliveries_per_s"]),
                    f(&p["fanout"]["deliveries_per_s"]),
                    mark(x >= 5.0)
                ));
            }
        }
    }
    // Cluster against one node, from the same harness.
    for server in ["herald", "socketio"] {
        let one = rows.iter().find(|(s, _)| s == server).and_then(|_| {
            res.0.iter().rev().find(|r| r["scenario"] == "s6" && r["server"] == server && r["cross"] == false)
        });
        let many = res.0.iter().rev().find(|r| r["scenario"] == "s6" && r["server"] == server && r["cross"] == true);
        if let (Some(one), Some(many)) = (one, many) {
            println!(
                "\n{server}: fan-out across {} nodes is {} of one node's deliveries/s.",
                many["nodes"],
                ratio(f(&many["fanout"]["deliveries_per_s"]), f(&one["fanout"]["deliveries_per_s"]))
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ratio;

    #[test]
    fn ratios_stay_readable_when_small() {
        assert_eq!(ratio(875.0, 21.0), "41.67×");
        assert_eq!(ratio(0.36, 1361.92), "1/3783");
        assert_eq!(ratio(1.0, 0.0), "n/a");
        assert_eq!(ratio(0.0, 5.0), "0.00×");
    }
}
