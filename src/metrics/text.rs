//! The gauges written as text at each scrape, from the state of the
//! moment (the fleet, the spool, the sources, the busiest paths and
//! destinations): no series outlives what it describes.

use std::fmt::Write;

use super::TOP_PATHS;

/// The fleet's gauges, written as text at each scrape.
pub(super) fn fleet(out: &mut String, f: &crate::views::FleetState) {
    let rows: [(&str, &str, &str, f64); 4] = [
        (
            "tern_cluster_redis_up",
            "gauge",
            "1 while the fleet's Redis answers; 0 while each node keeps to its share of the shared limits.",
            f64::from(u8::from(f.redis_up)),
        ),
        (
            "tern_cluster_nodes",
            "gauge",
            "Nodes of the fleet alive when last counted (this one included).",
            f64::from(f.nodes),
        ),
        (
            "tern_cluster_redis_round_trips_total",
            "counter",
            "Round trips to the fleet's Redis since start.",
            f.round_trips as f64,
        ),
        (
            "tern_cluster_leases",
            "gauge",
            "Fleet-wide connection slots this node holds now.",
            f.leases as f64,
        ),
    ];
    for (name, kind, help, v) in rows {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
}

/// Gauges of the [`TOP_PATHS`] busiest paths, written as text at each
/// scrape.
pub(super) fn paths(out: &mut String, paths: &[crate::views::PathRow]) {
    let gauges: [Gauge<crate::views::PathRow>; 5] = [
        (
            "tern_path_connections",
            "Open connections of an egress path (source to site).",
            |p| p.connections,
        ),
        (
            "tern_path_waiting_messages",
            "Messages in an egress path's ready queue (moved there from their destination, waiting for a connection).",
            |p| p.waiting,
        ),
        (
            "tern_path_sending_messages",
            "Messages an egress path is sending now.",
            |p| p.sending,
        ),
        (
            "tern_path_oldest_waiting_seconds",
            "Queue age of the oldest message waiting at an egress path.",
            |p| p.oldest_secs,
        ),
        (
            "tern_path_sent_last_minute",
            "Messages an egress path sent over the last minute (its current rate).",
            |p| p.sent_last_minute,
        ),
    ];
    let labels = |p: &crate::views::PathRow| {
        let provider = p.provider.as_deref().unwrap_or("other");
        [
            ("source", &*p.source),
            ("site", &*p.site),
            ("provider", provider),
        ]
        .map(|(k, v)| (k, escape(v)))
    };
    write_gauges(out, paths, &gauges, labels);
}

/// `tern_spool_state{state}`: 1 for the spool's state now, 0 for the others.
pub(super) fn spool_state(out: &mut String, h: &queue::Health) {
    let name = "tern_spool_state";
    let _ = writeln!(
        out,
        "# HELP {name} The spool's state: healthy, full (new mail refused, outcomes written) or unwritable (nothing written now; delivery waits; heals by itself); 1 for the state now.\n# TYPE {name} gauge"
    );
    let now = crate::views::spool_state(h).0;
    for s in crate::views::SPOOL_STATES {
        let _ = writeln!(out, "{name}{{state=\"{s}\"}} {}", u8::from(s == now));
    }
}

/// A gauge written per row: its name, its help, its value for a row.
type Gauge<T> = (&'static str, &'static str, fn(&T) -> u64);

/// Writes each gauge (name, help, value of a row) for the first
/// [`TOP_PATHS`] rows, labelled by `labels`.
fn write_gauges<T>(
    out: &mut String,
    rows: &[T],
    gauges: &[Gauge<T>],
    labels: impl Fn(&T) -> [(&'static str, String); 3],
) {
    for (name, help, field) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for r in rows.iter().take(TOP_PATHS) {
            let l = labels(r).map(|(k, v)| format!("{k}=\"{v}\""));
            let _ = writeln!(out, "{name}{{{}}} {}", l.join(","), field(r));
        }
    }
}

/// Gauges of the [`TOP_PATHS`] destinations with the most mail waiting,
/// written as text at each scrape.
pub(super) fn destinations(out: &mut String, dests: &[crate::views::DestRow]) {
    let gauges: [Gauge<crate::views::DestRow>; 3] = [
        (
            "tern_destination_scheduled_messages",
            "Messages waiting in a destination's scheduled queue (a pool's mail to a site) for room at its paths: metadata only.",
            |d| d.scheduled,
        ),
        (
            "tern_destination_oldest_scheduled_seconds",
            "Queue age of the oldest message waiting in a destination's scheduled queue.",
            |d| d.oldest_secs,
        ),
        (
            "tern_destination_held",
            "1 while a destination's mail waits for a hold (a suspension, a pause, a warm-up share, its paths' rates or room), else 0.",
            |d| u64::from(d.held.is_some()),
        ),
    ];
    let labels = |d: &crate::views::DestRow| {
        let provider = d.provider.as_deref().unwrap_or("other");
        [
            ("pool", &*d.pool),
            ("site", &*d.site),
            ("provider", provider),
        ]
        .map(|(k, v)| (k, escape(v)))
    };
    write_gauges(out, dests, &gauges, labels);
}

/// A label value escaped for the text format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `tern_source_info` (address and proxy of each source), whether it is
/// usable now, and its proxy's failures by reason.
pub(super) fn sources(out: &mut String, sources: &[crate::views::SourceRow]) {
    let name = "tern_source_info";
    let _ = writeln!(
        out,
        "# HELP {name} An egress source: the address receivers see (behind a proxy, the public one) and the proxy it leaves through; always 1.\n# TYPE {name} gauge"
    );
    for s in sources {
        let _ = writeln!(
            out,
            "{name}{{source=\"{}\",address=\"{}\",proxy=\"{}\"}} 1",
            escape(&s.name),
            escape(s.address.as_deref().unwrap_or("")),
            escape(s.proxy.as_deref().unwrap_or(""))
        );
    }
    let name = "tern_source_usable";
    let _ = writeln!(
        out,
        "# HELP {name} 1 while a source can send, 0 while it rests after its address could not be bound or its proxy failed.\n# TYPE {name} gauge"
    );
    for s in sources {
        let _ = writeln!(
            out,
            "{name}{{source=\"{}\"}} {}",
            escape(&s.name),
            u8::from(s.usable)
        );
    }
    let name = "tern_source_proxy_failures_total";
    let _ = writeln!(
        out,
        "# HELP {name} Connections a source's proxy did not give, by reason: unreachable, slow or refused (the source rests), destination (the proxy could not reach the MX host).\n# TYPE {name} counter"
    );
    for s in sources.iter().filter(|s| s.proxy.is_some()) {
        for (reason, n) in &s.proxy_failures {
            let _ = writeln!(
                out,
                "{name}{{source=\"{}\",reason=\"{reason}\"}} {n}",
                escape(&s.name)
            );
        }
    }
}
