//! The benchmark's output: one row per run, and the goals beside them.

use std::time::Duration;

use crate::{Args, Run};

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Prints the table of runs.
pub fn table(a: &Args, runs: &[Run]) {
    let target = a
        .target
        .map_or("tern (child process)".to_string(), |t| t.to_string());
    println!(
        "\nrelay: {} messages of {} B, {} clients, {} domains on {} MX hosts, target {target}",
        a.messages, a.size, a.clients, a.domains, a.hosts
    );
    println!(
        "{:<8} {:>9} {:>10} {:>12} {:>9} {:>9} {:>12} {:>9} {:>10} {:>10}",
        "dkim",
        "accepted",
        "accepted/s",
        "end-to-end/s",
        "p50",
        "p99",
        "MTA CPU/msg",
        "peak RSS",
        "load/msg",
        "sinks/msg"
    );
    for r in runs {
        let mut lat = r.latencies.clone();
        lat.sort();
        let n = r.accepted.max(1) as f64;
        let us = |secs: f64| format!("{:.0} us", secs * 1e6 / n);
        println!(
            "{:<8} {:>9} {:>10.0} {:>12.0} {:>9.2?} {:>9.2?} {:>12} {:>9} {:>10} {:>10}",
            format!("{:?}", r.signing).to_lowercase(),
            r.accepted,
            n / r.inject.as_secs_f64(),
            n / r.end_to_end.as_secs_f64(),
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            r.mta_cpu.map_or("-".into(), us),
            r.mta_peak_rss
                .map_or("-".into(), |b| format!("{} MB", b >> 20)),
            us(r.load_cpu),
            us(r.net_cpu),
        );
        if r.deferred_at_door > 0 || r.duplicates > 0 {
            println!(
                "         {} deferred at the door (4xx), {} delivered twice",
                r.deferred_at_door, r.duplicates
            );
        }
    }
    println!("all accepted messages arrived at the sinks (checked per X-Bench-Id)");
    println!(
        "goals (2-core machine): MTA CPU <= 150 us/msg without DKIM, <= 1 ms RSA-2048, <= 200 us Ed25519; end-to-end >= 2,000/s without DKIM; peak RSS < 256 MB"
    );
}
