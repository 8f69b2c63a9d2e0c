//! Delivery events to a webhook end to end: Tern delivers to a sink on
//! the test's network and posts its events to an HTTP receiver in the
//! test, which checks each batch's signature (HMAC-SHA256, as a receiver
//! would in a few lines of Python) and keeps what it got. The receiver
//! fails for a while and recovers: no event is lost, none comes twice
//! within a run; across a restart, the export resumes after the last
//! acknowledged event.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::net::{Net, Tern, ZONE, submit, until};
use tern::config::WebhookConfig;

const SECRET: &str = "a-long-shared-secret";

/// An HTTP receiver of webhook batches.
struct Receiver {
    addr: SocketAddr,
    events: Arc<Mutex<Vec<serde_json::Value>>>,
    failing: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
    bad_signatures: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

/// What a receiver does with `X-Tern-Signature: t=..,v1=..`.
fn verify(header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = Some(x),
            Some(("v1", x)) => v1 = Some(x),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let mut msg = format!("{t}.").into_bytes();
    msg.extend_from_slice(body);
    let want: String = ring::hmac::sign(&key, &msg)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    want == v1
}

impl Receiver {
    async fn start() -> Self {
        use axum::body::Bytes;
        use axum::http::{HeaderMap, StatusCode};
        let events = Arc::new(Mutex::new(Vec::new()));
        let failing = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(AtomicUsize::new(0));
        let bad = Arc::new(AtomicUsize::new(0));
        let (e, f, r, b) = (
            events.clone(),
            failing.clone(),
            refused.clone(),
            bad.clone(),
        );
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let (e, f, r, b) = (e.clone(), f.clone(), r.clone(), b.clone());
                async move {
                    let sig = headers
                        .get("x-tern-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    if !verify(sig, &body) {
                        b.fetch_add(1, Ordering::SeqCst);
                        return StatusCode::UNAUTHORIZED;
                    }
                    if f.load(Ordering::SeqCst) {
                        r.fetch_add(1, Ordering::SeqCst);
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let batch: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
                    e.lock().unwrap().extend(batch);
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            events,
            failing,
            refused,
            bad_signatures: bad,
            task,
        }
    }

    fn got(&self) -> Vec<serde_json::Value> {
        self.events.lock().unwrap().clone()
    }

    fn count(&self, kind: &str) -> usize {
        self.got().iter().filter(|e| e["type"] == kind).count()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn config(net: &Net, hook: SocketAddr) -> tern::config::Config {
    let mut cfg = net.config();
    cfg.events.webhook.push(WebhookConfig {
        name: "test".into(),
        url: format!("http://{hook}/hook"),
        secret: Some(SECRET.into()),
        batch_size: 5,
        batch_latency: "100ms".parse().unwrap(),
        timeout: "2s".parse().unwrap(),
        ..WebhookConfig::default()
    });
    cfg
}

async fn send(tern: &Tern, to: &str) {
    let r = submit(
        tern.addr,
        "app@shop.test",
        &[to],
        b"Subject: e\r\n\r\nx\r\n",
    )
    .await;
    assert!(r.starts_with("250"), "{r}");
}

fn ids(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn events_reach_a_webhook_signed_in_order_and_none_is_lost_while_it_fails() {
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    let hook = Receiver::start().await;
    let tern = Tern::start(config(&net, hook.addr)).await;
    send(&tern, "one@alpha.test").await;
    send(&tern, "permfail@alpha.test").await;
    assert!(
        until(Duration::from_secs(20), || hook.count("bounce") == 1
            && hook.count("delivery") == 1)
        .await,
        "{:#?}",
        hook.got()
    );
    let bounce = hook
        .got()
        .into_iter()
        .find(|e| e["type"] == "bounce")
        .unwrap();
    assert_eq!(bounce["bounce_class"], "InvalidRecipient", "{bounce}");
    assert_eq!(
        (
            bounce["bounce_kind"].as_str(),
            bounce["code"].as_u64(),
            bounce["enhanced_code"].as_str()
        ),
        (Some("hard"), Some(550), Some("5.1.1"))
    );
    assert_eq!(bounce["recipient"], "permfail@alpha.test");

    // The receiver fails for a while; 12 more messages meanwhile.
    hook.failing.store(true, Ordering::SeqCst);
    for i in 0..12 {
        send(&tern, &format!("r{i}@alpha.test")).await;
    }
    assert!(
        until(Duration::from_secs(20), || hook
            .refused
            .load(Ordering::SeqCst)
            >= 2)
        .await
    );
    assert_eq!(
        mx.wait_received(13, Duration::from_secs(20)).await.len(),
        13,
        "delivery goes on"
    );
    hook.failing.store(false, Ordering::SeqCst);
    assert!(
        until(Duration::from_secs(30), || hook.count("delivery") == 13).await,
        "{}",
        hook.count("delivery")
    );
    tern.stop().await;

    let got = hook.got();
    let all = ids(&got);
    assert_eq!(
        all.iter().collect::<HashSet<_>>().len(),
        all.len(),
        "none twice within a run"
    );
    let seqs: Vec<u64> = all
        .iter()
        .map(|i| tern::log::event_seq(i).unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order");
    assert_eq!(hook.count("reception"), 15, "14 sent, and the bounce's DSN");
    let log = net.log();
    assert_eq!(log.len(), got.len(), "every line of the log, once");
    assert_eq!(hook.bad_signatures.load(Ordering::SeqCst), 0);
    mx.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn a_restart_resumes_after_the_last_acknowledged_event() {
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    let hook = Receiver::start().await;
    let cfg = config(&net, hook.addr);
    let tern = Tern::start(cfg.clone()).await;
    send(&tern, "a@alpha.test").await;
    assert!(until(Duration::from_secs(20), || hook.count("delivery") == 1).await);
    // Down: what happens now waits in the log for the next run.
    hook.failing.store(true, Ordering::SeqCst);
    send(&tern, "b@alpha.test").await;
    assert_eq!(mx.wait_received(2, Duration::from_secs(20)).await.len(), 2);
    tern.stop().await;
    hook.failing.store(false, Ordering::SeqCst);
    let tern = Tern::start(cfg).await;
    send(&tern, "c@alpha.test").await;
    assert!(
        until(Duration::from_secs(30), || hook.count("delivery") == 3).await,
        "{:#?}",
        hook.got()
    );
    tern.stop().await;
    let all = ids(&hook.got());
    assert_eq!(
        all.iter().collect::<HashSet<_>>().len(),
        all.len(),
        "nothing acknowledged came again"
    );
    assert_eq!(all.len(), net.log().len());
    mx.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn a_batch_refused_past_the_retry_window_is_parked_on_disk_and_the_next_goes() {
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    let hook = Receiver::start().await;
    let mut cfg = config(&net, hook.addr);
    cfg.events.webhook[0].retry_window = "1s".parse().unwrap();
    cfg.events.webhook[0].events = vec!["delivery".into()];
    let tern = Tern::start(cfg.clone()).await;
    hook.failing.store(true, Ordering::SeqCst);
    send(&tern, "parked@alpha.test").await;
    let parked = std::path::PathBuf::from(format!("{}.parked-test", cfg.log.deliveries.display()));
    assert!(
        until(Duration::from_secs(20), || std::fs::read_to_string(&parked)
            .is_ok_and(|t| t.contains("parked@alpha.test")))
        .await
    );
    hook.failing.store(false, Ordering::SeqCst);
    send(&tern, "after@alpha.test").await;
    assert!(until(Duration::from_secs(20), || hook.count("delivery") == 1).await);
    tern.stop().await;
    let got = hook.got();
    assert_eq!(
        got[0]["recipient"], "after@alpha.test",
        "only deliveries, and the parked one is not sent again: {got:#?}"
    );
    assert_eq!(got.len(), 1);
    mx.stop().await;
    net.stop().await;
}
