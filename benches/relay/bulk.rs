//! Operations over a large queue, through the admin API of a running
//! daemon (the deferred run's restarted one): how long the views take to
//! answer, and how long a hold, a release, a retry-now, a rebind, a bounce
//! and a purge of the whole queue take, each followed to its end, and how many
//! delivery attempts the receivers saw meanwhile (delivery goes on).

use std::time::{Duration, Instant};

use tern::admin::client::{get, get_text, send};
use tern::admin::types::{JobProgress, JobStarted, Retried};
use tern::config::AdminConfig;

/// What was measured.
pub struct Bulk {
    /// (name, milliseconds) of each view.
    pub views: Vec<(&'static str, f64)>,
    /// (operation, seconds, messages acted on, delivery attempts the
    /// receivers saw meanwhile) of each operation.
    pub ops: Vec<(&'static str, f64, u64, u64)>,
}

/// The admin config to reach `address` with.
pub fn admin(address: std::net::SocketAddr) -> AdminConfig {
    AdminConfig {
        enabled: true,
        address,
        ..AdminConfig::default()
    }
}

/// Times the views, then the operations over every queued message;
/// `attempts` counts the recipients the receivers were offered.
pub fn run(admin: &AdminConfig, attempts: &std::sync::atomic::AtomicU64, relay: &str) -> Bulk {
    let mut views = Vec::new();
    for (name, path) in [
        ("queue summary", "/v1/queue/summary"),
        ("queue by domain", "/v1/queue/by/domain"),
        ("queue by site", "/v1/queue/by/site"),
        ("status page", "/status"),
        ("queue list (first page)", "/v1/queue/messages?limit=100"),
    ] {
        let t = Instant::now();
        get_text(admin, path).unwrap_or_else(|e| panic!("{path}: {e}"));
        views.push((name, t.elapsed().as_secs_f64() * 1000.0));
    }
    let mut ops = Vec::new();
    let counted = |op: (&'static str, f64, u64), before: u64| {
        let now = attempts.load(std::sync::atomic::Ordering::Relaxed);
        (op.0, op.1, op.2, now - before)
    };
    let all = serde_json::json!({});
    let (t, a) = (
        Instant::now(),
        attempts.load(std::sync::atomic::Ordering::Relaxed),
    );
    let r: Retried = send(admin, "POST", "/v1/retry", &all).expect("retry");
    let retried = (
        "retry now, everything",
        t.elapsed().as_secs_f64(),
        r.messages,
    );
    ops.push(counted(retried, a));
    let sender = serde_json::json!({"sender": "app@shop.example", "reason": "bench"});
    let dsns = serde_json::json!({"sender": ""});
    // Every message sent through a relay host from now on (it defers
    // too), and made due at once.
    let rebind =
        serde_json::json!({"sender": "app@shop.example", "via": [relay], "reason": "bench"});
    for (name, path, body) in [
        ("hold everything", "/v1/hold", &all),
        ("release everything", "/v1/release", &all),
        ("rebind everything via a relay host", "/v1/rebinds", &rebind),
        ("bounce everything (DSNs queued)", "/v1/bounce", &sender),
        ("purge the DSNs", "/v1/purge", &dsns),
    ] {
        let a = attempts.load(std::sync::atomic::Ordering::Relaxed);
        ops.push(counted(job(admin, name, path, body), a));
    }
    Bulk { views, ops }
}

/// Starts a job and follows it to its end (bounded: 30 minutes).
fn job(
    admin: &AdminConfig,
    name: &'static str,
    path: &str,
    body: &serde_json::Value,
) -> (&'static str, f64, u64) {
    let t = Instant::now();
    let started: JobStarted =
        send(admin, "POST", path, body).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut held = false;
    for _ in 0..18_000 {
        let p: JobProgress = get(admin, &format!("/v1/jobs/{}", started.job)).expect("progress");
        if !held && p.stage == "bouncing" {
            held = true;
            let secs = t.elapsed().as_secs_f64();
            println!(
                "operation: {name}: all {} held (none tried again) after {secs:.1} s",
                p.held
            );
        }
        if p.finished {
            return (name, t.elapsed().as_secs_f64(), p.done_items);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{name} did not finish within 30 minutes");
}

/// Prints what was measured.
pub fn print(b: &Bulk) {
    for (name, ms) in &b.views {
        println!("view: {name} answered in {ms:.0} ms");
    }
    for (name, secs, n, tried) in &b.ops {
        println!(
            "operation: {name}: {n} messages in {secs:.1} s; meanwhile {tried} delivery attempts at the receivers ({:.0}/s)",
            *tried as f64 / secs.max(0.001)
        );
    }
    println!("goals: views under 100 ms; each operation over 1,000,000 messages within 10 s");
}
