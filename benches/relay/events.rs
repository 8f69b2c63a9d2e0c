//! `--events`: the relay run without DKIM twice on one fake internet,
//! first with no webhook, then with every event posted to a webhook
//! receiver in this process (a thread of its own, counted with the
//! sinks). Reports what the export adds to Tern's CPU per message (goal:
//! under 10 us) and the lag of the events: from the time an event was
//! written (its `time`) to its arrival at the receiver, p50 and p99.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::{Args, Run, relay_with};

/// What the receiver got: events and the lag of each, in ms.
#[derive(Default)]
struct Got {
    events: u64,
    lags_ms: Vec<u64>,
}

/// The receiver: an HTTP server on its own runtime thread.
fn receiver() -> (SocketAddr, Arc<Mutex<Got>>) {
    let got = Arc::new(Mutex::new(Got::default()));
    let g = got.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("bench-net-hook".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let app = axum::Router::new().route(
                    "/hook",
                    axum::routing::post(move |body: axum::body::Bytes| {
                        let g = g.clone();
                        async move {
                            let now = SystemTime::now();
                            let batch: Vec<serde_json::Value> =
                                serde_json::from_slice(&body).unwrap_or_default();
                            let mut g = g.lock().unwrap();
                            for e in batch {
                                g.events += 1;
                                if let Some(t) =
                                    e["time"].as_str().and_then(tern::clock::parse_rfc3339)
                                {
                                    g.lags_ms.push(
                                        now.duration_since(t).map_or(0, |d| d.as_millis() as u64),
                                    );
                                }
                            }
                            axum::http::StatusCode::OK
                        }
                    }),
                );
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(l.local_addr().unwrap()).unwrap();
                let _ = axum::serve(l, app).await;
            });
        })
        .unwrap();
    (rx.recv().unwrap(), got)
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0)
}

/// The two runs and the difference.
pub fn run(a: &Args) {
    let net = crate::accepting(a, 0);
    let (hook, got) = receiver();
    net.2.reset();
    let plain = relay_with(a, &net, crate::tern::Signing::Off, |_| {});
    net.2.reset();
    let url = format!("http://{hook}/hook");
    let with = relay_with(a, &net, crate::tern::Signing::Off, move |c| {
        c.events.webhook.push(tern::config::WebhookConfig {
            name: "bench".into(),
            url,
            secret: Some("bench-secret".into()),
            batch_size: 500,
            batch_latency: "200ms".parse().unwrap(),
            ..Default::default()
        });
    });
    // The last events leave within a batch latency or so.
    let expected = 2 * with.accepted as u64;
    let t = Instant::now();
    while got.lock().unwrap().events < expected && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let g = got.lock().unwrap();
    let mut lags = g.lags_ms.clone();
    lags.sort_unstable();
    let per = |r: &Run| r.mta_cpu.unwrap_or(0.0) * 1e6 / r.accepted.max(1) as f64;
    println!(
        "\nevents: {} messages of {} B, {} clients, no DKIM; a webhook gets every event (reception and delivery: 2 per message)",
        a.messages, a.size, a.clients
    );
    println!("{:<16} {:>12} {:>14}", "", "Tern CPU/msg", "end-to-end/s");
    for (name, r) in [("no webhook", &plain), ("webhook", &with)] {
        println!(
            "{name:<16} {:>9.1} us {:>14.0}",
            per(r),
            r.accepted as f64 / r.end_to_end.as_secs_f64()
        );
    }
    println!(
        "the export adds {:.1} us of Tern CPU per message (goal: under 10 us); events received {} of {expected}; lag p50 {} ms, p99 {} ms, max {} ms",
        per(&with) - per(&plain),
        g.events,
        pct(&lags, 0.5),
        pct(&lags, 0.99),
        lags.last().copied().unwrap_or(0)
    );
}
