//! Prometheus text exposition (format 0.0.4) of the node's counters.

use std::fmt::Write;

use super::sampler::Overview;

/// One queue's gauges; only shared queues are exported (per-session queues
/// would make one series per connection).
pub struct QueueGauge<'a> {
    pub vhost: &'a str,
    pub name: &'a str,
    pub ready: usize,
    pub consumers: usize,
}

/// Escapes a label value (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

pub fn render(o: &Overview, queues: &[QueueGauge<'_>]) -> String {
    let mut out = String::with_capacity(2048 + queues.len() * 160);
    family(&mut out, "herald_sessions", "gauge", "Open sessions by protocol and transport.");
    for (k, n) in &o.sessions_by_transport {
        let (protocol, transport) = k.split_once('/').unwrap_or((k, ""));
        let _ =
            writeln!(out, "herald_sessions{{protocol=\"{}\",transport=\"{}\"}} {n}", label(protocol), label(transport));
    }
    let gauges = [
        ("herald_users_online", "Users with at least one session.", o.users_online as u64),
        ("herald_queues", "Queues on this node.", o.queues as u64),
        ("herald_messages_ready", "Messages waiting in queues.", o.messages_ready as u64),
        ("herald_messages_unacked", "Messages delivered and not yet acknowledged.", o.messages_unacked as u64),
        ("herald_uptime_seconds", "Seconds since the engine started.", o.uptime_secs),
    ];
    for (name, help, v) in gauges {
        family(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name} {v}");
    }
    let counters = [
        (
            "herald_messages_published_total",
            "Messages published (once per message, before fan-out).",
            o.totals.published,
        ),
        ("herald_messages_delivered_total", "Deliveries to consumers.", o.totals.delivered),
        ("herald_messages_acked_total", "Deliveries acknowledged.", o.totals.acked),
        ("herald_messages_dropped_total", "Messages dropped from full queues.", o.totals.dropped),
    ];
    for (name, help, v) in counters {
        family(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    }
    family(&mut out, "herald_queue_messages_ready", "gauge", "Messages waiting in a shared queue.");
    for q in queues {
        let _ = writeln!(
            out,
            "herald_queue_messages_ready{{vhost=\"{}\",queue=\"{}\"}} {}",
            label(q.vhost),
            label(q.name),
            q.ready
        );
    }
    family(&mut out, "herald_queue_consumers", "gauge", "Consumers of a shared queue.");
    for q in queues {
        let _ = writeln!(
            out,
            "herald_queue_consumers{{vhost=\"{}\",queue=\"{}\"}} {}",
            label(q.vhost),
            label(q.name),
            q.consumers
        );
    }
    out
}

/// The memory alarm's measure (docs/security.md, "Memory").
pub fn render_memory(out: &mut String, m: &crate::engine::MemoryUse) {
    let mut gauges = vec![
        (
            "herald_memory_held_bytes",
            "Message bytes held in queues, outboxes and transactions (what the high watermark bounds).",
            m.held_bytes,
        ),
        ("herald_memory_alarm", "1 while the memory alarm refuses publishes.", m.alarm as u64),
    ];
    if let Some(w) = m.high_watermark {
        gauges.push(("herald_memory_high_watermark_bytes", "limits.memory_high_watermark in bytes.", w));
    }
    if let Some(rss) = m.rss_bytes {
        gauges.push(("herald_process_resident_memory_bytes", "Resident set size of the process.", rss));
    }
    for (name, help, v) in gauges {
        family(out, name, "gauge", help);
        let _ = writeln!(out, "{name} {v}");
    }
}

/// The data directory's group commit, when `node.data_dir` is set:
/// tickets / syncs is how many writers one journal sync served.
pub fn render_disk(out: &mut String, c: &crate::store::disk::DiskCounters) {
    use std::sync::atomic::Ordering::Relaxed;
    let counters = [
        ("herald_disk_syncs_total", "Journal syncs by the group commit.", c.syncs.load(Relaxed)),
        (
            "herald_disk_tickets_total",
            "Durability tickets those syncs resolved (receipts of persistent messages, among others).",
            c.tickets.load(Relaxed),
        ),
    ];
    for (name, help, v) in counters {
        family(out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    }
}

/// The cluster Bus, on a node in a cluster: `refused` counts publishes
/// that reached this node's subscribers only (Redis down, or the outgoing
/// buffer full).
pub fn render_bus(out: &mut String, s: &crate::bus::BusStats, connected: bool) {
    let counters = [
        ("herald_bus_published_total", "Publishes handed to the cluster Bus.", s.published),
        (
            "herald_bus_refused_total",
            "Publishes the Bus refused (Redis down or buffer full): delivered on this node only.",
            s.refused,
        ),
        ("herald_bus_received_total", "Messages from other nodes for this node's bindings.", s.received),
        ("herald_bus_bad_frames_total", "Frames from Redis that did not decode or fit their channel.", s.bad_frames),
        ("herald_bus_dropped_total", "Messages from other nodes dropped: the receive buffer was full.", s.dropped),
    ];
    for (name, help, v) in counters {
        family(out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    }
    family(out, "herald_bus_connected", "gauge", "1 while the cluster Bus is connected to Redis.");
    let _ = writeln!(out, "herald_bus_connected {}", connected as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::sampler::{Rates, TotalsOut};

    #[test]
    fn renders_the_group_commit() {
        let c = crate::store::disk::DiskCounters::default();
        c.syncs.store(3, std::sync::atomic::Ordering::Relaxed);
        c.tickets.store(120, std::sync::atomic::Ordering::Relaxed);
        let mut out = String::new();
        render_disk(&mut out, &c);
        assert!(out.contains("# TYPE herald_disk_syncs_total counter\nherald_disk_syncs_total 3\n"), "{out}");
        assert!(out.contains("herald_disk_tickets_total 120\n"), "{out}");
    }

    #[test]
    fn renders_families_and_escapes_labels() {
        let o = Overview {
            node: "n".into(),
            version: "0",
            uptime_secs: 7,
            sessions: 3,
            users_online: 2,
            queues: 1,
            exchanges: 8,
            messages_ready: 4,
            messages_unacked: 0,
            sessions_by_protocol: [("stomp".to_string(), 3)].into(),
            sessions_by_transport: [("stomp/tcp".to_string(), 2), ("stomp/ws".to_string(), 1)].into(),
            rates: Rates::default(),
            totals: TotalsOut { published: 10, delivered: 9, acked: 8, dropped: 1 },
        };
        let text = render(&o, &[QueueGauge { vhost: "/", name: "jobs \"x\"", ready: 4, consumers: 0 }]);
        assert!(text.contains("herald_sessions{protocol=\"stomp\",transport=\"tcp\"} 2\n"));
        assert!(text.contains("herald_messages_published_total 10\n"));
        assert!(text.contains("# TYPE herald_messages_dropped_total counter\n"));
        assert!(text.contains("herald_queue_messages_ready{vhost=\"/\",queue=\"jobs \\\"x\\\"\"} 4\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "sample value parses: {line}");
        }
    }
}
