//! `tern top`: a terminal view of the running daemon, redrawn every
//! interval from its admin API: messages accepted, delivered, deferred and
//! bounced per second (from the `/metrics` counters), the queue's depth
//! and oldest message, the busiest egress paths with their connections,
//! rate and holds, and the automatic actions in force. It only reads.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Ctx;
use crate::admin::client::{CallError, get, get_text};
use crate::config::AdminConfig;
use crate::shaping::rules::Action;
use crate::views::PathRow;

/// `tern top` options.
#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// Seconds between frames.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Print one frame (rates over one interval) and exit: for scripts,
    /// and with `--json`.
    #[arg(long)]
    once: bool,
    /// Paths shown.
    #[arg(long, default_value_t = 10)]
    rows: usize,
    /// The configuration file (for the admin address and token).
    #[arg(long, short, default_value_os_t = crate::config::default_path())]
    config: std::path::PathBuf,
}

/// The counters and gauges a frame is computed from.
#[derive(Debug, Clone, Default)]
struct Sample {
    at: Option<Instant>,
    values: HashMap<String, f64>,
}

/// One frame.
#[derive(Debug, Serialize)]
struct Frame {
    accepted_per_sec: f64,
    delivered_per_sec: f64,
    deferred_per_sec: f64,
    bounced_per_sec: f64,
    queued_messages: f64,
    queued_recipients: f64,
    oldest_waiting_secs: f64,
    resident_memory_bytes: f64,
    paths: Vec<PathRow>,
    actions: Vec<Action>,
}

/// Runs `tern top`.
pub fn run(args: &TopArgs, ctx: &Ctx) -> ExitCode {
    if !(0.1..=3600.0).contains(&args.interval) {
        eprintln!("tern: --interval must be 0.1 to 3600 seconds");
        return ExitCode::from(2);
    }
    let Some(admin) = ctx.admin(&args.config) else {
        return ExitCode::FAILURE;
    };
    let interval = Duration::from_secs_f64(args.interval);
    let mut last = match sample(&admin) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    loop {
        std::thread::sleep(interval);
        let now = match sample(&admin) {
            Ok(s) => s,
            Err(e) => return fail(&e),
        };
        let frame = match frame(&admin, &last, &now, args.rows) {
            Ok(f) => f,
            Err(e) => return fail(&e),
        };
        if args.once || ctx.json {
            return super::emit(ctx.json, &frame, draw);
        }
        out_text!("\x1b[H\x1b[2J{}", draw(&frame));
        last = now;
    }
}

fn fail(e: &CallError) -> ExitCode {
    eprintln!("tern: {e}");
    ExitCode::FAILURE
}

/// Reads `/metrics`: each series summed by name, and the recipients'
/// outcomes by outcome.
fn sample(admin: &AdminConfig) -> Result<Sample, CallError> {
    let text = get_text(admin, "/metrics")?;
    Ok(Sample {
        at: Some(Instant::now()),
        values: parse_metrics(&text),
    })
}

/// Sums Prometheus text series by name (`name` or, for the recipients'
/// outcomes, `name:outcome`).
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut out: HashMap<String, f64> = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        *out.entry(name.to_owned()).or_default() += value;
        if let Some(outcome) = label(labels, "outcome") {
            *out.entry(format!("{name}:{outcome}")).or_default() += value;
        }
    }
    out
}

/// The value of label `key` in `a="x",b="y"}`.
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{key}=\""))? + key.len() + 2;
    let len = labels[start..].find('"')?;
    Some(&labels[start..start + len])
}

fn frame(admin: &AdminConfig, a: &Sample, b: &Sample, rows: usize) -> Result<Frame, CallError> {
    let rate = |k: &str| rate(a, b, k);
    let gauge = |k: &str| b.values.get(k).copied().unwrap_or(0.0);
    let mut paths: Vec<PathRow> = get(admin, "/v1/paths")?;
    paths.sort_by_key(|p| std::cmp::Reverse((p.sent_last_minute, p.sending, p.waiting)));
    paths.truncate(rows);
    Ok(Frame {
        accepted_per_sec: rate("tern_messages_received_total"),
        delivered_per_sec: rate("tern_recipients_total:delivered"),
        deferred_per_sec: rate("tern_recipients_total:deferred"),
        bounced_per_sec: rate("tern_recipients_total:bounced"),
        queued_messages: gauge("tern_queue_messages"),
        queued_recipients: gauge("tern_queue_recipients"),
        oldest_waiting_secs: gauge("tern_queue_oldest_waiting_seconds"),
        resident_memory_bytes: gauge("tern_resident_memory_bytes"),
        paths,
        actions: get(admin, "/v1/shaping/actions")?,
    })
}

/// Counter `key`'s increase per second from `a` to `b`, to a tenth (a
/// counter that went down, after a restart, counts as 0).
fn rate(a: &Sample, b: &Sample, key: &str) -> f64 {
    let secs = match (a.at, b.at) {
        (Some(x), Some(y)) => y.duration_since(x).as_secs_f64().max(0.001),
        _ => 1.0,
    };
    let d = b.values.get(key).copied().unwrap_or(0.0) - a.values.get(key).copied().unwrap_or(0.0);
    (d.max(0.0) / secs * 10.0).round() / 10.0
}

/// The frame as text.
fn draw(f: &Frame) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "accepted {:>8.1}/s   delivered {:>8.1}/s   deferred {:>7.1}/s   bounced {:>6.1}/s",
        f.accepted_per_sec, f.delivered_per_sec, f.deferred_per_sec, f.bounced_per_sec
    );
    let _ = writeln!(
        s,
        "queue    {:>8} messages, {} recipients, oldest waiting {}s   RSS {} MB\n",
        f.queued_messages,
        f.queued_recipients,
        f.oldest_waiting_secs,
        (f.resident_memory_bytes / 1e6).round()
    );
    let _ = writeln!(
        s,
        "{:<14} {:<34} {:<10} {:>5} {:>8} {:>8}  held",
        "source", "site", "provider", "conns", "sent/min", "waiting"
    );
    for p in &f.paths {
        let _ = writeln!(
            s,
            "{:<14} {:<34} {:<10} {:>5} {:>8} {:>8}  {}",
            clip(&p.source, 14),
            clip(&p.site, 34),
            clip(p.provider.as_deref().unwrap_or("-"), 10),
            p.connections,
            p.sent_last_minute,
            p.waiting,
            p.held.as_deref().unwrap_or("")
        );
    }
    let _ = writeln!(s, "\nautomatic actions in force: {}", f.actions.len());
    for a in f.actions.iter().take(5) {
        let _ = writeln!(s, "  {} (rule {}, until {})", a.target, a.rule, a.end);
    }
    s
}

fn clip(s: &str, n: usize) -> String {
    match s.chars().count() > n {
        true => s.chars().take(n - 1).chain(['~']).collect(),
        false => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_summed_by_name_and_outcome() {
        let text = "# HELP x\ntern_messages_received_total{pool=\"a\"} 3\ntern_messages_received_total{pool=\"b\"} 4\ntern_recipients_total{outcome=\"delivered\",provider=\"p\"} 5\ntern_recipients_total{outcome=\"bounced\",provider=\"p\"} 1\ntern_queue_messages 7\n";
        let v = parse_metrics(text);
        assert_eq!(v["tern_messages_received_total"], 7.0);
        assert_eq!(v["tern_recipients_total:delivered"], 5.0);
        assert_eq!(v["tern_recipients_total:bounced"], 1.0);
        assert_eq!(v["tern_queue_messages"], 7.0);
        assert_eq!(clip("abcdef", 4), "abc~");
    }

    #[test]
    fn rates_are_per_second_between_two_samples() {
        let t = Instant::now();
        let key = "tern_messages_received_total";
        let a = Sample {
            at: Some(t),
            values: HashMap::from([(key.into(), 10.0)]),
        };
        let b = Sample {
            at: Some(t + Duration::from_secs(4)),
            values: HashMap::from([(key.into(), 31.0)]),
        };
        assert_eq!(rate(&a, &b, key), 5.3);
        assert_eq!(
            rate(&b, &a, key),
            0.0,
            "a restart's reset is no negative rate"
        );
        assert_eq!(rate(&a, &b, "absent"), 0.0);
    }
}
