//! Operators acting on queued mail over the admin API and the CLI, against
//! a daemon started by the test: rebinding mail to another pool, bouncing
//! by filter, the queue's views and one message's details, and a reload
//! that takes a source out of its pool.

mod common;

use std::time::Duration;

use common::admin::{
    admin, call, cli_file, config, refusing, reload_with, start_from_file, submit_ok, tern_cli,
    wait_up,
};
use common::net::{Net, Tern, WAIT, ZONE, pool, until};
use tern::admin::client::get;
use tern::admin::types::{MessageDetail, MessagePage, QueueBreakdown, RebindRule};

#[tokio::test]
async fn a_rebind_moves_waiting_mail_to_another_pool_and_it_leaves_from_its_ip() {
    let net = Net::new(ZONE).await;
    let blocked = net.sink_with(10, refusing()).await;
    let other = net.sink_with(13, refusing()).await;
    let a = admin(&net);
    let mut cfg = config(&net, &a);
    cfg.pools.push(pool("spare", &[("b", 1)]));
    let tern = Tern::start(cfg).await;
    for to in ["x@alpha.test", "y@alpha.test", "z@sender.test"] {
        submit_ok(&tern, &[to]).await;
    }
    assert!(
        until(WAIT, || blocked.connections() >= 2
            && other.connections() >= 1)
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await; // deferred for 10 minutes
    blocked.stop().await;
    let mx = net.sink(10).await;

    let file = cli_file(&net, &a);
    let (ok, out) = tern_cli(
        vec!["rebind", "--domain", "alpha.test", "--to-pool", "nope"],
        file.clone(),
    )
    .await;
    assert!(!ok && out.contains("no pool is named \"nope\""), "{out}");
    let args = vec![
        "rebind",
        "--domain",
        "alpha.test",
        "--to-pool",
        "spare",
        "--reason",
        "a blocked at alpha",
    ];
    let (ok, out) = tern_cli(args, file.clone()).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("rebind 1 in force") && out.contains("made due now 2 message(s)"),
        "{out}"
    );
    let got = mx.wait_received(2, WAIT).await;
    assert_eq!(
        got.len(),
        2,
        "the moved mail left without waiting for its retry time"
    );
    for r in &got {
        assert_eq!(r.peer.ip(), net.ip(21), "from source b, the spare pool's");
    }
    let cfg = a.clone();
    let list: Vec<RebindRule> = call(move || get(&cfg, "/v1/rebinds")).await.unwrap();
    assert_eq!((list.len(), list[0].to_pool.as_deref()), (1, Some("spare")));
    let (_, out) = tern_cli(vec!["rebind", "--list"], file.clone()).await;
    assert!(out.contains("a blocked at alpha"), "{out}");
    let (_, out) = tern_cli(vec!["actions"], file.clone()).await;
    assert!(out.contains("no automatic actions in force"), "{out}");
    assert_eq!(
        other.received().len(),
        0,
        "mail the filter does not select stays put"
    );
    // sender.test's own MX refuses: relay its mail through alpha's host.
    let via: &'static str = Box::leak(format!("{}:{}", net.ip(10), net.port).into_boxed_str());
    let args = vec!["rebind", "--domain", "sender.test", "--via", via];
    let (ok, out) = tern_cli(args, file.clone()).await;
    assert!(
        ok && out.contains(&format!("mail moves to via {via}")),
        "{out}"
    );
    let got = mx.wait_received(3, WAIT).await;
    assert!(
        got.iter().any(|r| r.rcpts == ["z@sender.test"]),
        "relayed via the new route"
    );
    let (spool, _) = queue::SpoolSnapshot::read(&net.dir.path().join("spool")).unwrap();
    let kept = spool.state(tern::state::REBINDS).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&kept).contains("spare"),
        "the rebind is kept in the spool"
    );
    let (_, out) = tern_cli(vec!["rebind", "--cancel", "1"], file.clone()).await;
    assert!(out.contains("rebind 1: ended"), "{out}");
    let (_, out) = tern_cli(vec!["rebind", "--list"], file.clone()).await;
    assert!(
        out.contains("   2  to via ") && !out.contains("   1  "),
        "{out}"
    );
    tern.stop().await;
    let log = net.log();
    let delivered: Vec<_> = log.iter().filter(|r| r["type"] == "delivery").collect();
    assert_eq!(delivered.len(), 3);
    for r in delivered {
        let moved_pool = r["recipient"] != "z@sender.test";
        let (pool, source) = if moved_pool {
            ("spare", "b")
        } else {
            ("default", "a")
        };
        assert!(r["pool"] == pool && r["source"] == source, "{r}");
    }
    mx.stop().await;
    other.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn an_operator_bounces_by_filter_and_each_sender_gets_a_dsn() {
    let net = Net::new(ZONE).await;
    let mx = net.sink_with(10, refusing()).await;
    let other = net.sink_with(13, refusing()).await;
    let a = admin(&net);
    let tern = Tern::start(config(&net, &a)).await;
    for to in ["x@alpha.test", "y@alpha.test", "z@sender.test"] {
        submit_ok(&tern, &[to]).await;
    }
    assert!(until(WAIT, || mx.connections() >= 2 && other.connections() >= 1).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let file = cli_file(&net, &a);
    let (ok, out) = tern_cli(
        vec!["bounce", "--reason", "campaign cancelled"],
        file.clone(),
    )
    .await;
    assert!(!ok && out.contains("never takes the whole queue"), "{out}");
    let args = vec![
        "bounce",
        "--domain",
        "alpha.test",
        "--reason",
        "campaign cancelled",
    ];
    let (ok, out) = tern_cli(args, file).await;
    assert!(ok && out.contains("bounced 2 message(s) of "), "{out}");
    tern.stop().await;
    let log = net.log();
    let bounces: Vec<_> = log
        .iter()
        .filter(|r| r["type"] == "bounce" && r["sender"] == "app@shop.test")
        .collect();
    assert_eq!(bounces.len(), 2, "{log:?}");
    for b in &bounces {
        let reply = b["reply"].as_str().unwrap();
        assert!(
            reply.contains("5.0.0") && reply.contains("campaign cancelled"),
            "{reply}"
        );
    }
    let dsns = log
        .iter()
        .filter(|r| {
            r["type"] == "reception"
                && r["client"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("bounce of"))
        })
        .count();
    assert_eq!(dsns, 2, "one DSN per bounced message");
    let spool = net.spool();
    assert!(
        spool
            .iter()
            .any(|(r, s)| r == "z@sender.test" && *s == queue::RecipientState::Pending)
    );
    mx.stop().await;
    other.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn the_queue_by_dimension_paged_lists_and_one_message_in_full() {
    let net = Net::new(ZONE).await;
    let mx = net.sink_with(10, refusing()).await;
    let a = admin(&net);
    let tern = Tern::start(config(&net, &a)).await;
    for to in [
        &["a@alpha.test", "b@alpha.test"][..],
        &["c@alpha.test"],
        &["d@sender.test"],
    ] {
        submit_ok(&tern, to).await;
    }
    assert!(until(WAIT, || mx.connections() >= 2).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let get_as = |path: &'static str| {
        let cfg = a.clone();
        call(move || get::<QueueBreakdown>(&cfg, path))
    };
    let by_domain = get_as("/v1/queue/by/domain").await.unwrap();
    assert_eq!(
        (by_domain.rows[0].key.as_str(), by_domain.rows[0].recipients),
        ("alpha.test", 3)
    );
    assert_eq!(by_domain.rows[0].messages, 2);
    assert!(
        by_domain.rows[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("421")),
        "{by_domain:?}"
    );
    let by_pool = get_as("/v1/queue/by/pool").await.unwrap();
    assert_eq!(
        (by_pool.rows[0].key.as_str(), by_pool.rows[0].messages),
        ("default", 3)
    );
    let by_priority = get_as("/v1/queue/by/priority").await.unwrap();
    assert_eq!(by_priority.rows[0].key, "normal");
    let by_site = get_as("/v1/queue/by/site").await.unwrap();
    let site = by_site.rows.iter().find(|r| r.key == "mx.alpha.test");
    assert_eq!(
        site.map(|r| r.recipients),
        Some(3),
        "deferred mail, by the site it was routed to: {by_site:?}"
    );
    assert!(get_as("/v1/queue/by/colour").await.is_err());

    let cfg = a.clone();
    let first: MessagePage =
        call(move || get(&cfg, "/v1/queue/messages?domain=alpha.test&limit=1"))
            .await
            .unwrap();
    assert_eq!(first.messages.len(), 1);
    let next = first.next.clone().expect("a second page");
    let cfg = a.clone();
    let second: MessagePage = call(move || {
        get(
            &cfg,
            &format!("/v1/queue/messages?domain=alpha.test&limit=1&after={next}"),
        )
    })
    .await
    .unwrap();
    assert_eq!(second.messages.len(), 1);
    assert_ne!(first.messages[0].id, second.messages[0].id);
    let id = first.messages[0].id.clone();

    let file = cli_file(&net, &a);
    let (ok, out) = tern_cli(
        vec!["queue", "inspect", Box::leak(id.clone().into_boxed_str())],
        file.clone(),
    )
    .await;
    assert!(ok, "{out}");
    assert!(
        out.contains("a@alpha.test") && out.contains("pending") && out.contains("421"),
        "{out}"
    );
    let (_, out) = tern_cli(vec!["--json", "queue", "by", "domain"], file.clone()).await;
    let parsed: QueueBreakdown =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(parsed.rows.len(), 2);
    let (_, out) = tern_cli(vec!["queue", "list", "--domain", "sender.test"], file).await;
    assert!(
        out.contains("app@shop.test") && out.contains("(end of the queue)"),
        "{out}"
    );
    let cfg = a.clone();
    let detail: MessageDetail =
        call(move || get(&cfg, &format!("/v1/queue/messages/{id}?body=true")))
            .await
            .unwrap();
    assert_eq!(detail.recipients.len(), 2);
    assert_eq!(detail.recipients[0].attempts, 1);
    assert!(detail.body.is_some_and(|b| b.contains("Subject: s")));
    tern.stop().await;
    mx.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn a_reload_takes_a_source_out_of_its_pool() {
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    let a = admin(&net);
    let file = net.dir.path().join("tern.toml");
    let with_pool = |members: &[(&str, u32)]| {
        let mut c = config(&net, &a);
        c.pools = vec![pool("default", members)];
        c
    };
    let both = with_pool(&[("a", 1), ("b", 1)]);
    let tern = start_from_file(both.clone(), &file).await;
    for i in 0..4 {
        submit_ok(&tern, &[&format!("r{i}@alpha.test")]).await;
    }
    let before = mx.wait_received(4, WAIT).await;
    let ips: std::collections::HashSet<_> = before.iter().map(|r| r.peer.ip()).collect();
    assert_eq!(ips.len(), 2, "both sources in use");

    let only_b = with_pool(&[("b", 1)]);
    let done = reload_with(&a, &file, &only_b).await.unwrap();
    assert!(done.applied.iter().any(|x| x == "pools"), "{done:?}");
    assert!(!done.needs_restart.iter().any(|x| x == "pool"), "{done:?}");
    for i in 4..10 {
        submit_ok(&tern, &[&format!("r{i}@alpha.test")]).await;
    }
    let after = mx.wait_received(10, WAIT).await;
    assert_eq!(after.len(), 10);
    for r in &after[4..] {
        assert_eq!(r.peer.ip(), net.ip(21), "a is out of the pool");
    }
    // The same from the CLI: the file again, and nothing left to retry.
    let cli = cli_file(&net, &a);
    let (ok, out) = tern_cli(vec!["reload"], cli.clone()).await;
    assert!(ok && out.contains("in force (shaping,"), "{out}");
    let (ok, out) = tern_cli(vec!["retry", "--domain", "alpha.test"], cli).await;
    assert!(
        ok && out.contains("0 message(s), 0 recipient(s) due now"),
        "{out}"
    );
    tern.stop().await;
    mx.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn the_api_describes_every_endpoint_in_openapi() {
    let net = Net::new(ZONE).await;
    let a = admin(&net);
    let tern = Tern::start(config(&net, &a)).await;
    wait_up(&a).await;
    let cfg = a.clone();
    let text = call(move || tern::admin::client::get_text(&cfg, "/v1/openapi.json"))
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let endpoints = [
        ("get", "/v1/health"),
        ("get", "/status"),
        ("get", "/v1/queue/summary"),
        ("get", "/v1/queue/by/{dimension}"),
        ("get", "/v1/queue/messages"),
        ("get", "/v1/queue/messages/{id}"),
        ("get", "/v1/paths"),
        ("get", "/v1/shaping/actions"),
        ("get", "/v1/shaping/effective"),
        ("delete", "/v1/shaping/actions"),
        ("post", "/v1/suspensions"),
        ("delete", "/v1/suspensions"),
        ("post", "/v1/retry"),
        ("post", "/v1/purge"),
        ("post", "/v1/bounce"),
        ("get", "/v1/jobs/{id}"),
        ("get", "/v1/rebinds"),
        ("post", "/v1/rebinds"),
        ("delete", "/v1/rebinds/{id}"),
        ("post", "/v1/reload"),
        ("get", "/v1/config"),
    ];
    for (method, path) in endpoints {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not described"
        );
    }
    // Every schema an operation names is described.
    let schemas = &doc["components"]["schemas"];
    for r in text.match_indices("#/components/schemas/") {
        let name: String = text[r.0 + r.1.len()..]
            .chars()
            .take_while(|c| *c != '"')
            .collect();
        assert!(
            schemas[&name].is_object(),
            "{name} is referred to but not described"
        );
    }
    // Operation ids are unique (client generators name methods by them),
    // and a real validator takes the document.
    let mut ids: Vec<&str> = (doc["paths"].as_object().unwrap().values())
        .flat_map(|p| p.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "operation ids repeat: {ids:?}");
    validate_openapi(&text, &net.dir.path().join("openapi.json"));
    // The limits of the config in force for a domain, routed as delivery
    // routes it, from the API and from the CLI.
    let cfg = a.clone();
    let e: tern::admin::types::EffectiveShaping =
        call(move || get(&cfg, "/v1/shaping/effective?domain=Alpha.test"))
            .await
            .unwrap();
    assert_eq!((e.site.as_str(), e.source.as_str()), ("mx.alpha.test", "a"));
    assert!(
        e.per_path
            .iter()
            .any(|r| r.key == "connection_limit" && r.from == "defaults ([delivery])"),
        "{e:?}"
    );
    let (ok, out) = tern_cli(
        vec!["shaping", "show", "--domain", "alpha.test"],
        cli_file(&net, &a),
    )
    .await;
    assert!(
        ok && out.contains("(from the running daemon") && out.contains("mx.alpha.test"),
        "{out}"
    );
    // The described GET endpoints without required parameters answer.
    for (method, path) in endpoints {
        let params = doc["paths"][path][method]["parameters"].as_array().cloned();
        let required = params
            .unwrap_or_default()
            .iter()
            .any(|p| p["required"] == true);
        if method == "get" && !required {
            let cfg = a.clone();
            let r = call(move || tern::admin::client::get_text(&cfg, path)).await;
            assert!(r.is_ok(), "{path}: {r:?}");
        }
    }
    tern.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn a_purge_waits_for_a_message_being_delivered_and_then_takes_it() {
    let net = Net::new(ZONE).await;
    let opts = common::sink::SinkOptions {
        hold: true,
        ..Default::default()
    };
    let mx = net.sink_with(10, opts).await;
    let a = admin(&net);
    let tern = Tern::start(config(&net, &a)).await;
    submit_ok(&tern, &["tempfail@alpha.test"]).await;
    assert!(until(WAIT, || mx.connections() >= 1).await);
    tokio::time::sleep(Duration::from_millis(300)).await; // its RCPT is held: in flight
    let file = cli_file(&net, &a);
    let purge = tokio::spawn(tern_cli(vec!["purge", "--domain", "alpha.test"], file));
    tokio::time::sleep(Duration::from_millis(700)).await;
    mx.release(); // the attempt ends (deferred); the purge takes the message
    let (ok, out) = purge.await.unwrap();
    assert!(
        ok && out.contains("purged 1 message(s)") && out.contains("0 being delivered"),
        "{out}"
    );
    tern.stop().await;
    assert!(net.spool().is_empty(), "purged");
    mx.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn a_reload_puts_new_dkim_keys_in_force() {
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    let a = admin(&net);
    let file = net.dir.path().join("tern.toml");
    let with_key = |selector: &str, pem: &str| {
        let mut c = config(&net, &a);
        c.dkim.keys = vec![common::dkim::key("shop.test", selector, pem)];
        c
    };
    let rsa = with_key("s1", "rsa2048.pkcs8.pem");
    let tern = start_from_file(rsa.clone(), &file).await;
    let tern_addr = tern.addr;
    let signed_mail = |to: &'static str| async move {
        let body = b"From: <news@shop.test>\r\nSubject: s\r\n\r\nb\r\n";
        let r = common::net::submit(tern_addr, "news@shop.test", &[to], body).await;
        assert!(r.starts_with("250"), "{r}");
    };
    signed_mail("one@alpha.test").await;
    let ed = with_key("s2", "ed25519.pem");
    let done = reload_with(&a, &file, &ed).await.unwrap();
    assert!(done.applied.iter().any(|x| x == "dkim keys"), "{done:?}");
    signed_mail("two@alpha.test").await;
    let got = mx.wait_received(2, WAIT).await;
    assert_eq!(got.len(), 2);
    let signed_by = |to: &str| {
        let r = got.iter().find(|r| r.rcpts == [to]).unwrap();
        common::dkim::signatures(&r.data)
    };
    assert_eq!(
        signed_by("one@alpha.test"),
        [("shop.test".to_owned(), "rsa-sha256".to_owned())]
    );
    assert_eq!(
        signed_by("two@alpha.test"),
        [("shop.test".to_owned(), "ed25519-sha256".to_owned())]
    );
    tern.stop().await;
    mx.stop().await;
    net.stop().await;
}

/// Validates an OpenAPI document with openapi-spec-validator (PyPI;
/// `.ci/run` installs it).
fn validate_openapi(text: &str, file: &std::path::Path) {
    std::fs::write(file, text).unwrap();
    let script = "import json, sys\nfrom openapi_spec_validator import validate\nvalidate(json.load(open(sys.argv[1])))\nprint('valid')";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(file)
        .output()
        .expect("python3 runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("No module named 'openapi_spec_validator'"),
        "install openapi-spec-validator (python3 -m pip install openapi-spec-validator; .ci/run does)"
    );
    assert!(
        out.status.success(),
        "the OpenAPI document is invalid:\n{err}"
    );
}

/// Milliseconds since the epoch.
fn now_ms() -> u64 {
    queue::Timestamp::now().as_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounce_a_stop_interrupted_goes_on_at_the_next_start_for_what_it_covered() {
    use tern::admin::types::{Bounce, BounceJournal, Filter};
    let net = Net::new(ZONE).await;
    let a = admin(&net);
    let cfg = config(&net, &a);
    let tomorrow = queue::Timestamp::now().saturating_add(Duration::from_secs(86_400));
    let to = |i| match i < 30 {
        true => format!("u{i}@alpha.test"),
        false => format!("k{i}@sender.test"),
    };
    common::fill_spool(&cfg, 35, to, &[], tomorrow).await;
    // What a stop in the middle of a bounce of alpha.test leaves behind:
    // its journal in the spool. A message arriving after it started is
    // not the bounce's.
    let journal = BounceJournal {
        request: Bounce {
            filter: Filter {
                domain: Some("alpha.test".into()),
                ..Filter::default()
            },
            reason: "campaign cancelled".into(),
        },
        started_ms: now_ms(),
    };
    {
        let (q, _) = common::reopen(cfg.queue.options());
        let kept = serde_json::to_vec(&journal).unwrap();
        q.put_state("bounce/1-1", kept.into()).await.unwrap();
        q.close();
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    common::fill_spool(&cfg, 1, |_| "late@alpha.test".into(), &[], tomorrow).await;

    let faults = std::sync::Arc::new(queue::faults::Faults::default());
    let (tern, q) = Tern::start_with_faults(cfg.clone(), faults).await;
    let ended = until(WAIT, || q.state_keys("bounce/").is_empty()).await;
    assert!(ended, "the resumed bounce ran to its end");
    tern.stop().await;
    drop(q);
    let log = net.log();
    let bounced: Vec<&str> = (log.iter())
        .filter(|r| r["type"] == "bounce" && r["sender"] == "news@shop.test")
        .filter_map(|r| r["recipient"].as_str())
        .collect();
    assert_eq!(bounced.len(), 30, "{bounced:?}");
    assert!((0..30).all(|i| bounced.contains(&format!("u{i}@alpha.test").as_str())));
    let spool = net.spool();
    let left = |r: &str| {
        spool
            .iter()
            .any(|(a, s)| a == r && *s == queue::RecipientState::Pending)
    };
    assert!(
        left("late@alpha.test"),
        "arrived after the bounce started: kept"
    );
    assert!((30..35).all(|i| left(&format!("k{i}@sender.test"))));
    assert!(!spool.iter().any(|(r, _)| r.starts_with('u')), "{spool:?}");
    net.stop().await;
}
