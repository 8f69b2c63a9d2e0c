//! Scale-in end to end: a node (`tern run`, a child process) with 10,000
//! queued messages (some partly delivered, some with DSN parameters,
//! some of high priority) is drained to two peers (in this process)
//! through a real redis-server; it is killed with SIGKILL in the middle of
//! the transfer and started again, and its drain goes on. Every pending
//! recipient is delivered exactly once, none is lost, and the done ones
//! are not sent again.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::admin::{TOKEN, admin, call};
use common::fleet::node;
use common::net::{Net, Tern, ZONE, submit_batch, submit_with, until};
use common::redis::Redis;
use tern::cluster::drain::Progress;
use tern::config::values::Duration as Span;
use tern::config::{AdminConfig, Config};

/// Messages queued on the draining node.
const MESSAGES: usize = 10_000;
/// Of which partly delivered before the drain (two recipients: one
/// delivered, one deferred).
const PARTIAL: usize = 20;
/// Of which with DSN parameters.
const DSN: usize = 10;

fn start(file: &std::path::Path, stderr: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["run", "--config"])
        .arg(file)
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::options()
                .create(true)
                .append(true)
                .open(stderr)
                .unwrap(),
        )
        .spawn()
        .expect("start tern")
}

/// The draining node's config: source `a`, quick first retry, a priority
/// header, its admin API on `api`.
fn draining(net: &Net, redis: &Redis, api: &AdminConfig, port: SocketAddr) -> Config {
    let mut c = node(net, redis, 0);
    c.admin = api.clone();
    c.listeners[0].address = port;
    c.delivery.retry_first = Span::from_secs(2);
    c.delivery.priority_header = Some("X-Class".into());
    c.cluster.as_mut().unwrap().token = Some(TOKEN.into());
    c.cluster.as_mut().unwrap().drain_batch = 100;
    c
}

/// A peer: source `b` (the draining node's `a` is suspended), its admin
/// API on its own port.
fn peer(net: &Net, redis: &Redis, i: usize) -> Config {
    let mut c = node(net, redis, i);
    c.pools = vec![common::net::pool("default", &[("b", 1)])];
    c.admin = admin(net);
    c.cluster.as_mut().unwrap().token = Some(TOKEN.into());
    c
}

async fn progress(api: &AdminConfig) -> Option<Progress> {
    let a = api.clone();
    call(move || tern::admin::client::get::<Progress>(&a, "/v1/drain").ok()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_hands_every_message_over_exactly_once_even_when_killed() {
    let redis = Redis::start().await;
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    let api = admin(&net);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let file = net.dir.path().join("node0.toml");
    let stderr = net.dir.path().join("node0.stderr");
    std::fs::write(
        &file,
        toml::to_string(&draining(&net, &redis, &api, port)).unwrap(),
    )
    .unwrap();
    let mut child = start(&file, &stderr);
    common::admin::wait_up(&api).await;
    let peers = [
        Tern::start(peer(&net, &redis, 1)).await,
        Tern::start(peer(&net, &redis, 2)).await,
    ];

    // Partly delivered: `ok` goes, `flaky` is deferred (the sink refuses
    // each address's first try) and waits 2 s for its retry.
    for i in 0..PARTIAL {
        let to = [format!("ok{i}@alpha.test"), format!("flaky{i}@alpha.test")];
        let to: Vec<&str> = to.iter().map(String::as_str).collect();
        let r = submit_with(
            port,
            "MAIL FROM:<app@sender.test>",
            &to,
            b"Subject: partial\r\n\r\nx\r\n",
        )
        .await;
        assert!(r.starts_with("250"), "{r}");
    }
    assert_eq!(
        mx.wait_received(PARTIAL, Duration::from_secs(20))
            .await
            .len(),
        PARTIAL
    );
    // Hold the rest on this node: its only source is suspended.
    let a = api.clone();
    let suspend = tern::admin::types::Suspend {
        target: tern::shaping::rules::Target::Source("a".into()),
        duration: "2h".into(),
        reason: "test".into(),
    };
    call(move || {
        tern::admin::client::send::<tern::admin::types::Action, _>(
            &a,
            "POST",
            "/v1/suspensions",
            &suspend,
        )
    })
    .await
    .unwrap();
    for i in 0..DSN {
        let to = format!("dsn{i}@alpha.test NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;dsn{i}@alpha.test");
        let mail = format!("MAIL FROM:<app@sender.test> RET=HDRS ENVID=env{i}");
        let r = submit_with(port, &mail, &[&to], b"Subject: dsn\r\n\r\nx\r\n").await;
        assert!(r.starts_with("250"), "{r}");
    }
    let rest = MESSAGES - PARTIAL - DSN;
    submit_batch(
        port,
        500,
        |k| format!("vip{k}@alpha.test"),
        "X-Class: high\r\n",
    )
    .await;
    submit_batch(port, rest - 500, |k| format!("m{k}@alpha.test"), "").await;

    // Drain to both peers; kill -9 mid-transfer; start again.
    let a = api.clone();
    let req = tern::admin::types::DrainRequest {
        to: vec!["node1".into(), "node2".into()],
    };
    call(move || tern::admin::client::send::<Progress, _>(&a, "POST", "/v1/drain", &req))
        .await
        .unwrap();
    let mid = until(Duration::from_secs(60), || {
        let m = std::fs::read_to_string(net.dir.path().join("node0/deliveries.jsonl"))
            .unwrap_or_default();
        m.matches("\"type\":\"moved\"").count() >= 2_000
    })
    .await;
    assert!(mid, "the drain moves mail");
    let _ = child.kill();
    let _ = child.wait();
    let mut child = start(&file, &stderr);
    common::admin::wait_up(&api).await;
    let mut last = None;
    for _ in 0..1200 {
        last = progress(&api).await;
        if last.as_ref().is_some_and(|p| p.state == "done") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last = last.expect("the drain answers");
    println!("after the restart: {last:?}");
    assert_eq!(last.state, "done", "{last:?}");
    assert_eq!(last.left, 0);

    // Every pending recipient exactly once: the deferred halves of the
    // partial messages, the DSN ones, and the rest; the delivered halves
    // not again.
    let expected = MESSAGES; // one pending recipient each
    let got = mx
        .wait_received(PARTIAL + expected, Duration::from_secs(120))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for m in mx.received() {
        for r in &m.rcpts {
            *seen.entry(r.clone()).or_default() += 1;
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    assert_eq!(
        got.len(),
        PARTIAL + expected,
        "every recipient arrived once"
    );
    for i in 0..PARTIAL {
        assert_eq!(seen.get(&format!("flaky{i}@alpha.test")), Some(&1));
    }
    // DSN parameters travelled: the peers passed them on.
    for i in 0..DSN {
        let to = format!("dsn{i}@alpha.test");
        let m = got
            .iter()
            .find(|m| m.rcpts == [to.clone()])
            .expect("delivered");
        let cmds = m.commands.join("\n");
        for want in [
            format!("RET=HDRS ENVID=env{i}"),
            format!("<{to}> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;{to}"),
        ] {
            assert!(cmds.contains(&want), "{want} in {cmds}");
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    for p in peers {
        p.stop().await;
    }
    mx.stop().await;
    net.stop().await;
}
