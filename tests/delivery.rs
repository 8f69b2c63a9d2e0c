//! Outbound delivery end to end, on a fake internet inside the test: mail
//! submitted to Tern's listener goes through the real resolver (asking an
//! in-process DNS server), from the configured source addresses, to
//! scripted SMTP sinks; the sinks, the delivery log and the spool are
//! checked afterwards. Everything is on 127.0.0.0/8. This file: routing
//! (MX, implicit MX, null MX, NXDOMAIN, loops) and egress sources and
//! pools; `delivery_outcomes.rs`: what happens per recipient and on the
//! wire; `delivery_time.rs`: retries and expiry.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::net::{Net, Tern, WAIT, ZONE, pool, records, submit, submit_with, text, until};
use common::sink::SinkOptions;

#[tokio::test]
async fn delivers_to_the_mx_from_the_configured_source_and_logs_it() {
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    let tern = Tern::start(net.config()).await;
    let body = b"Subject: hi\r\nMessage-ID: <m1@shop.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nhello\r\n";
    let r = submit(
        tern.addr,
        "app@shop.test",
        &["one@alpha.test", "two@Alpha.test"],
        body,
    )
    .await;
    assert!(r.starts_with("250"), "{r}");

    let got = mx.wait_received(1, WAIT).await;
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.peer.ip(), net.ip(20), "sent from source a");
    assert_eq!(m.commands[0], "EHLO a.tern.test", "the source's EHLO name");
    assert_eq!(m.from, "app@shop.test");
    assert_eq!(
        m.rcpts,
        ["one@alpha.test", "two@Alpha.test"],
        "one transaction for the domain"
    );
    assert_eq!(
        common::after_received(&m.data),
        body,
        "only the Received header is added"
    );
    assert!(m.data.starts_with(b"Received: from client.test"));
    tern.stop().await;

    let log = net.log();
    let reception = log
        .iter()
        .find(|r| r["type"] == "reception")
        .expect("a reception line");
    assert_eq!(reception["recipients"], 2);
    assert_eq!(reception["sender"], "app@shop.test");
    for rcpt in ["one@alpha.test", "two@Alpha.test"] {
        let d = records(&log, "delivery", rcpt);
        assert_eq!(d.len(), 1, "{log:#?}");
        let d = d[0];
        assert_eq!(d["queue_id"], reception["queue_id"]);
        assert_eq!(d["message_id"], "<m1@shop.test>");
        assert_eq!(d["site"], "mx.alpha.test");
        assert_eq!(d["source"], "a");
        assert_eq!(d["pool"], "default");
        assert_eq!(d["remote_host"], "mx.alpha.test");
        assert_eq!(d["remote_ip"], net.ip(10).to_string());
        assert_eq!(d["reply"], "250 2.0.0 queued");
        assert_eq!(d["attempts"], 1);
        assert!(d["queue_time_ms"].is_u64());
    }
    assert!(net.spool().is_empty(), "delivered messages leave the spool");
    mx.stop().await;
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_weights_hold_over_a_thousand_messages() {
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    let mut cfg = net.config();
    cfg.pools = vec![pool("default", &[("a", 3), ("b", 1)])];
    let tern = Tern::start(cfg).await;
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..4 {
        let addr = tern.addr;
        clients.spawn(async move {
            for i in 0..250 {
                let body = format!("Subject: {c}-{i}\r\n\r\nmessage {c}-{i}\r\n");
                let r = submit(addr, "app@shop.test", &["bulk@alpha.test"], body.as_bytes()).await;
                assert!(r.starts_with("250"), "{r}");
            }
        });
    }
    while let Some(r) = clients.join_next().await {
        r.unwrap();
    }
    let got = mx.wait_received(1000, Duration::from_secs(120)).await;
    assert_eq!(got.len(), 1000);
    let distinct: HashSet<&[u8]> = got
        .iter()
        .map(|m| common::after_received(&m.data))
        .collect();
    assert_eq!(distinct.len(), 1000, "no message twice");
    let from_a = got.iter().filter(|m| m.peer.ip() == net.ip(20)).count();
    let from_b = got.iter().filter(|m| m.peer.ip() == net.ip(21)).count();
    assert_eq!(from_a + from_b, 1000);
    assert!(
        (700..=800).contains(&from_a),
        "weights 3:1 give about 750 from a, not {from_a}"
    );
    tern.stop().await;
    mx.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn the_pool_comes_from_the_header_else_the_tenant_and_the_header_is_stripped() {
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    let mut cfg = net.config();
    cfg.pools.push(pool("b-only", &[("b", 1)]));
    cfg.delivery.pool_header = Some("X-Tern-Pool".into());
    cfg.tenants.push(tern::config::TenantConfig {
        name: "shop".into(),
        pool: Some("b-only".into()),
        ..Default::default()
    });
    cfg.listeners[0].tenant = Some("shop".into());
    cfg.listeners[0].pool = Some("default".into());
    let tern = Tern::start(cfg).await;
    let tagged = b"X-Tern-Pool: default\r\nSubject: tagged\r\n\r\nbody\r\n";
    submit(tern.addr, "app@shop.test", &["tagged@alpha.test"], tagged).await;
    submit(
        tern.addr,
        "app@shop.test",
        &["plain@alpha.test"],
        b"Subject: plain\r\n\r\nbody\r\n",
    )
    .await;
    let got = mx.wait_received(2, WAIT).await;
    assert_eq!(got.len(), 2);
    let by = |rcpt: &str| got.iter().find(|m| m.rcpts == [rcpt]).unwrap();
    assert_eq!(
        by("tagged@alpha.test").peer.ip(),
        net.ip(20),
        "the header's pool"
    );
    assert_eq!(
        by("plain@alpha.test").peer.ip(),
        net.ip(21),
        "the tenant's pool, before the listener's"
    );
    assert!(
        !text(&by("tagged@alpha.test").data).contains("X-Tern-Pool"),
        "the header is removed"
    );
    tern.stop().await;
    mx.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn an_internationalized_domain_is_routed_by_its_a_label() {
    let net = Net::new(&format!("{ZONE}\nxn--bcher-kva IN MX 10 mx.alpha\n")).await;
    let opts = SinkOptions {
        smtputf8: true,
        ..SinkOptions::default()
    };
    let mx = net.sink_with(10, opts).await;
    let tern = Tern::start(net.config()).await;
    let mail = "MAIL FROM:<app@shop.test> SMTPUTF8";
    let r = submit_with(
        tern.addr,
        mail,
        &["leser@Bücher.test"],
        b"Subject: x\r\n\r\nx\r\n",
    )
    .await;
    assert!(r.starts_with("250"), "{r}");
    let got = mx.wait_received(1, WAIT).await;
    assert_eq!(
        got[0].rcpts,
        ["leser@Bücher.test"],
        "the address as written"
    );
    tern.stop().await;
    mx.stop().await;
    let log = net.log();
    let d = records(&log, "delivery", "leser@Bücher.test");
    assert_eq!(d[0]["site"], "mx.alpha.test", "{log:#?}");
    net.stop().await;
}

#[tokio::test]
async fn implicit_mx_and_a_dead_first_mx() {
    let net = Net::new(ZONE).await;
    let (mx, implicit) = (net.sink(10).await, net.sink(11).await);
    let tern = Tern::start(net.config()).await;
    submit(
        tern.addr,
        "app@shop.test",
        &["a@implicit.test", "b@backup.test"],
        b"Subject: x\r\n\r\nx\r\n",
    )
    .await;
    assert_eq!(
        implicit.wait_received(1, WAIT).await[0].rcpts,
        ["a@implicit.test"]
    );
    assert_eq!(mx.wait_received(1, WAIT).await[0].rcpts, ["b@backup.test"]);
    tern.stop().await;
    let log = net.log();
    assert_eq!(
        records(&log, "delivery", "a@implicit.test")[0]["remote_host"],
        "implicit.test"
    );
    let b = records(&log, "delivery", "b@backup.test");
    assert_eq!(
        b[0]["remote_host"], "live.backup.test",
        "the second MX, after the first refused"
    );
    assert_eq!(b[0]["site"], "dead.backup.test,live.backup.test");
    assert_eq!(b[0]["attempts"], 1, "one attempt tries the hosts in order");
    mx.stop().await;
    implicit.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn null_mx_nxdomain_and_a_prohibited_mx_bounce_without_connecting() {
    let net = Net::new(ZONE).await;
    let (sender, forbidden) = (net.sink(13).await, net.sink(99).await);
    let tern = Tern::start(net.config()).await;
    let rcpts = ["a@nullmx.test", "b@nosuch.test", "c@loop.test"];
    submit(
        tern.addr,
        "app@sender.test",
        &rcpts,
        b"Subject: doomed\r\n\r\nbody\r\n",
    )
    .await;
    let got = sender.wait_received(1, WAIT).await;
    assert_eq!(got.len(), 1, "one bounce for the three failures");
    let dsn = text(&got[0].data);
    assert_eq!(got[0].from, "", "bounces come from <>");
    assert_eq!(got[0].rcpts, ["app@sender.test"]);
    for (rcpt, status) in [
        (rcpts[0], "5.1.10"),
        (rcpts[1], "5.1.2"),
        (rcpts[2], "5.4.6"),
    ] {
        let block =
            format!("Final-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: {status}\r\n");
        assert!(dsn.contains(&block), "{block:?} not in\n{dsn}");
    }
    assert!(
        dsn.contains("Diagnostic-Code: smtp; 556 5.1.10 nullmx.test accepts no mail (null MX)\r\n"),
        "{dsn}"
    );
    tern.stop().await;
    assert!(
        forbidden.sessions().is_empty() && forbidden.received().is_empty(),
        "never a connection to a prohibited address"
    );
    let log = net.log();
    for rcpt in rcpts {
        assert_eq!(records(&log, "bounce", rcpt).len(), 1, "{rcpt}: {log:#?}");
    }
    assert!(
        net.spool().is_empty(),
        "failed recipients and the delivered bounce are gone"
    );
    sender.stop().await;
    forbidden.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn a_source_that_cannot_bind_is_skipped_and_never_bounces_mail() {
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    let mut cfg = net.config();
    // 192.0.2.1 (TEST-NET-1) is not an address of this machine: binding
    // it fails locally with EADDRNOTAVAIL; no packet is sent.
    cfg.sources.push(tern::config::SourceConfig {
        name: "gone".into(),
        address: Some("192.0.2.1".parse().unwrap()),
        ehlo: None,
        proxy: None,
        warmup: None,
        shared: None,
    });
    cfg.pools = vec![
        pool("default", &[("gone", 5), ("a", 1)]),
        pool("stranded", &[("gone", 1)]),
    ];
    cfg.delivery.pool_header = Some("X-Tern-Pool".into());
    let tern = Tern::start(cfg).await;
    for i in 0..5 {
        submit(
            tern.addr,
            "app@shop.test",
            &[&format!("r{i}@alpha.test")],
            b"Subject: b\r\n\r\nx\r\n",
        )
        .await;
    }
    let got = mx.wait_received(5, WAIT).await;
    assert_eq!(got.len(), 5);
    assert!(
        got.iter().all(|m| m.peer.ip() == net.ip(20)),
        "all through the source that works"
    );
    let r = submit(
        tern.addr,
        "app@shop.test",
        &["stranded@alpha.test"],
        b"X-Tern-Pool: stranded\r\n\r\nx\r\n",
    )
    .await;
    assert!(r.starts_with("250"), "{r}");
    // Its pool's only source cannot be bound: it waits for the source
    // (a local fault is never an attempt), never bounces.
    tokio::time::sleep(Duration::from_millis(500)).await;
    tern.stop().await;
    let log = net.log();
    assert!(
        log.iter()
            .all(|r| r["type"] != "bounce" && r["type"] != "transient_failure"),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .filter(|r| r["type"] == "delivery")
            .all(|r| r["source"] == "a")
    );
    let queued = net.spool();
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].0, "stranded@alpha.test");
    mx.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn a_site_with_no_host_answering_pauses_and_its_other_mail_waits_untried() {
    // dead.test's only MX is .12, where nothing listens.
    let net = Net::new(&format!("{ZONE}\ndead IN MX 10 dead.backup\n")).await;
    let mut cfg = net.config();
    cfg.delivery.connection_limit = 1;
    let tern = Tern::start(cfg).await;
    for i in 0..5 {
        let rcpt = format!("r{i}@dead.test");
        submit(
            tern.addr,
            "app@shop.test",
            &[&rcpt],
            b"Subject: d\r\n\r\nx\r\n",
        )
        .await;
    }
    let tried = || {
        let log = net.log();
        (0..5)
            .filter(|i| !records(&log, "transient_failure", &format!("r{i}@dead.test")).is_empty())
            .count()
    };
    // dead_site_failures (3) connections fail, each a real attempt; then
    // the path pauses and the rest wait without being tried.
    assert!(until(WAIT, || tried() == 3).await, "{:#?}", net.log());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(tried(), 3, "{:#?}", net.log());
    tern.stop().await;
    let log = net.log();
    let t = records(&log, "transient_failure", "r0@dead.test")
        .into_iter()
        .chain(records(&log, "transient_failure", "r1@dead.test"))
        .next()
        .unwrap()
        .clone();
    assert!(
        t["reply"]
            .as_str()
            .unwrap()
            .starts_with("451 4.4.1 no answer from any host of dead.backup.test"),
        "{t}"
    );
    assert!(log.iter().all(|r| r["type"] != "bounce"));
    assert_eq!(net.spool().len(), 5, "all still queued");
    let actions = net.actions();
    assert!(
        actions.iter().any(|a| a.rule == "dead_site"),
        "the pause is kept in the spool: {actions:?}"
    );
    net.stop().await;
}

#[tokio::test]
async fn an_mx_at_our_own_listener_is_a_loop_and_bounces_without_connecting() {
    let net = Net::new(&format!(
        "{ZONE}\nself IN MX 10 mx.self\nmx.self IN A 127.0.0.1\n"
    ))
    .await;
    let sender = net.sink(13).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = net.config();
    // MX hosts are reached on Tern's own port; bounces go to the sink.
    cfg.delivery.port = listener.local_addr().unwrap().port();
    cfg.routes.push(tern::config::RouteConfig {
        domain: "sender.test".into(),
        smarthost: vec![sender.addr.to_string()],
        ..Default::default()
    });
    let tern = Tern::start_on(listener, cfg).await;
    submit(
        tern.addr,
        "app@sender.test",
        &["x@self.test"],
        b"Subject: loop\r\n\r\nx\r\n",
    )
    .await;
    let dsn = text(&sender.wait_received(1, WAIT).await[0].data);
    assert!(
        dsn.contains("Final-Recipient: rfc822; x@self.test\r\nAction: failed\r\nStatus: 5.4.6\r\n"),
        "{dsn}"
    );
    tern.stop().await;
    let receptions = net
        .log()
        .iter()
        .filter(|r| r["type"] == "reception")
        .count();
    assert_eq!(
        receptions, 2,
        "the message and its bounce; nothing came back in"
    );
    sender.stop().await;
    net.stop().await;
}
