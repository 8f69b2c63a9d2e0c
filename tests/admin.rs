//! The admin API over real HTTP against a daemon started by the test, and
//! the `tern` verbs that use it.

mod common;

use std::time::Duration;

use common::admin::{
    TOKEN, admin, call, cli_file, config, refusing, reload_with, start_from_file, submit_ok,
    tern_cli, wait_up,
};
use common::net::{Net, Tern, WAIT, ZONE, until};
use tern::admin::client::{CallError, get, send};
use tern::admin::types::{Action, CancelAction, Cancelled, Health, QueueSummary, Target};

#[tokio::test]
async fn health_and_queue_summary_need_the_token_and_show_the_queue() {
    let net = Net::new(ZONE).await;
    let mx = net.sink_with(10, refusing()).await;
    let a = admin(&net);
    let tern = Tern::start(config(&net, &a)).await;
    submit_ok(&tern, &["x@alpha.test", "y@alpha.test"]).await;
    assert!(
        until(WAIT, || mx.connections() >= 1).await,
        "tried and deferred"
    );

    let cfg = a.clone();
    let health: Health = call(move || get(&cfg, "/v1/health")).await.unwrap();
    assert_eq!(health.queue, "healthy");
    let cfg = a.clone();
    let s: QueueSummary = call(move || get(&cfg, "/v1/queue/summary")).await.unwrap();
    assert_eq!((s.messages, s.recipients), (1, 2));
    assert_eq!(s.domains[0].domain, "alpha.test");
    assert_eq!(s.domains[0].recipients, 2);
    let cfg = a.clone();
    let page = call(move || tern::admin::client::get_text(&cfg, "/status"))
        .await
        .unwrap();
    assert!(page.starts_with("<!doctype html>") && page.contains("http-equiv=\"refresh\""));
    assert!(
        page.contains("<td>alpha.test</td><td class=\"n\">2</td>"),
        "{page}"
    );
    assert!(!page.contains("src=\"http"), "no external assets");
    assert!(page.contains("<h2>Sending by provider</h2>") && page.contains("<h2>Busiest paths"));
    assert!(page.contains("<h1>Tern on "), "the host is named");
    assert!(
        page.contains("oldest waiting<b>") && !page.contains(" MB</b>"),
        "{page}"
    );
    assert!(page.contains("<h2>Rates (per second)</h2>") && page.contains(">accepted</td>"));
    assert!(
        !page.contains("<th></th></tr>"),
        "every column has a header"
    );

    let mut no_token = a.clone();
    no_token.token = None;
    let refused = call(move || get::<Health>(&no_token, "/v1/health")).await;
    assert!(
        matches!(refused, Err(CallError::Status { status: 401, .. })),
        "{refused:?}"
    );
    let mut wrong = a.clone();
    wrong.token = Some("not-the-token-at-all".into());
    let refused = call(move || get::<Health>(&wrong, "/v1/health")).await;
    assert!(
        matches!(refused, Err(CallError::Status { status: 401, .. })),
        "{refused:?}"
    );

    tern.stop().await;
    let down = call(move || get::<Health>(&a, "/v1/health")).await;
    assert!(matches!(down, Err(CallError::Down(_))), "{down:?}");
    mx.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn an_operator_cancels_a_suspension_and_mail_flows_at_once() {
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    let a = admin(&net);
    let mut cfg = config(&net, &a);
    cfg.shaping.rules.push(tern::config::RuleConfig {
        name: "busy".into(),
        codes: vec![450],
        scope: tern::config::RuleScope::Path,
        duration: Some(tern::config::values::Duration::from_secs(3600)),
        ..tern::config::RuleConfig::default()
    });
    let tern = Tern::start(cfg).await;
    submit_ok(&tern, &["tempfail@alpha.test"]).await;
    let cfg = a.clone();
    let listed = async {
        for _ in 0..100 {
            let cfg = cfg.clone();
            let l: Vec<Action> = call(move || get(&cfg, "/v1/shaping/actions"))
                .await
                .unwrap();
            if !l.is_empty() {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Vec::new()
    };
    let list = listed.await;
    assert_eq!(list.len(), 1, "{list:?}");
    let target = list[0].target.clone();
    assert!(
        matches!(&target, Target::Path(s, _) if s == "a"),
        "{target:?}"
    );

    // Suspended for an hour: mail waits...
    submit_ok(&tern, &["ok@alpha.test"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mx.tries("ok@alpha.test"), 0);
    // ...until an operator cancels the suspension.
    let (cfg, req) = (
        a.clone(),
        CancelAction {
            target: target.clone(),
        },
    );
    let done: Cancelled = call(move || send(&cfg, "DELETE", "/v1/shaping/actions", &req))
        .await
        .unwrap();
    assert!(done.cancelled);
    let (cfg, req) = (a.clone(), CancelAction { target });
    let again: Cancelled = call(move || send(&cfg, "DELETE", "/v1/shaping/actions", &req))
        .await
        .unwrap();
    assert!(!again.cancelled, "nothing left to cancel");
    assert!(
        until(WAIT, || mx.tries("ok@alpha.test") == 1).await,
        "delivered at once after the cancel: it waited, it was not deferred"
    );
    tern.stop().await;
    let log = net.log();
    assert!(
        common::net::records(&log, "transient_failure", "ok@alpha.test").is_empty(),
        "waiting for a suspension is not an attempt"
    );
    let d = common::net::records(&log, "delivery", "ok@alpha.test");
    assert_eq!(d[0]["attempts"], 1);
    mx.stop().await;
    net.stop().await;
}

#[test]
fn check_config_wants_a_token_beyond_loopback() {
    let text = "[admin]\naddress = \"0.0.0.0:8025\"\n";
    let e = tern::config::parse(std::path::Path::new("t.toml"), text).unwrap_err();
    assert!(e.to_string().contains("admin.token"), "{e}");
    let text = "[admin]\naddress = \"0.0.0.0:8025\"\ntoken = \"short\"\n";
    let e = tern::config::parse(std::path::Path::new("t.toml"), text).unwrap_err();
    assert!(e.to_string().contains("at least 16"), "{e}");
    // A good token beyond loopback still needs HTTPS, or plaintext allowed
    // in so many words (tests/admin_https.rs).
    let text = "[admin]\naddress = \"0.0.0.0:8025\"\ntoken = \"0123456789abcdefXYZ\"\nallow_plaintext = true\n";
    assert!(tern::config::parse(std::path::Path::new("t.toml"), text).is_ok());
}

#[tokio::test]
async fn the_cli_asks_the_running_daemon() {
    let net = Net::new(ZONE).await;
    let mx = net.sink_with(10, refusing()).await;
    let a = admin(&net);
    let tern = Tern::start(config(&net, &a)).await;
    submit_ok(&tern, &["x@alpha.test"]).await;
    let file = net.dir.path().join("cli.toml");
    let text = format!(
        "[admin]\naddress = \"{}\"\ntoken = \"{TOKEN}\"\n[queue]\npath = \"{}\"\n",
        a.address,
        net.dir.path().join("nowhere").display()
    );
    std::fs::write(&file, text).unwrap();
    let summary = tern_cli(vec!["queue", "summary"], file.clone()).await.1;
    assert!(
        summary.contains("(from the running daemon): 1 message(s), 1 recipient(s)"),
        "{summary}"
    );
    assert!(summary.contains("alpha.test"), "{summary}");
    let actions = tern_cli(vec!["shaping", "actions"], file.clone()).await.1;
    assert!(
        actions.contains("no automatic actions in force"),
        "{actions}"
    );
    tern.stop().await;
    // Daemon down: the summary reads the spool the config names instead.
    let summary = tern_cli(vec!["queue", "summary"], file).await.1;
    assert!(summary.contains("nothing has been queued"), "{summary}");
    mx.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_match_the_delivery_log() {
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    let a = admin(&net);
    let tern = Tern::start(config(&net, &a)).await;
    for to in ["one@alpha.test", "two@alpha.test", "tempfail@alpha.test"] {
        submit_ok(&tern, &[to]).await;
    }
    assert!(
        until(WAIT, || mx.received().len() == 2
            && mx.tries("tempfail@alpha.test") == 1)
        .await
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cfg = a.clone();
    let text = call(move || tern::admin::client::get_text(&cfg, "/metrics"))
        .await
        .unwrap();
    tern.stop().await;

    // Every sample line is `name{labels} value`; every metric has help text.
    let mut samples = std::collections::HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        assert!(!series.contains('{') || series.ends_with('}'), "{line}");
        let base = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            text.contains(&format!("# HELP {base} ")),
            "no help for {base}"
        );
        *samples.entry(series.to_owned()).or_insert(0.0) += v;
    }
    let sum = |prefix: &str, part: &str| -> f64 {
        samples
            .iter()
            .filter(|(k, _)| k.starts_with(prefix) && k.contains(part))
            .map(|(_, v)| v)
            .sum()
    };
    let log = net.log();
    let count = |t: &str| log.iter().filter(|r| r["type"] == t).count() as f64;
    assert_eq!(sum("tern_messages_received_total", ""), count("reception"));
    assert_eq!(
        sum("tern_recipients_total", "outcome=\"delivered\""),
        count("delivery")
    );
    assert_eq!(
        sum("tern_recipients_total", "outcome=\"deferred\""),
        count("transient_failure")
    );
    assert_eq!(sum("tern_queue_messages", ""), 1.0, "the deferred one");
    assert!(sum("tern_queue_time_seconds_count", "") >= 2.0);
    // The path the mail left by: its sending rate, by source and site.
    let path = "source=\"a\",site=\"mx.alpha.test\"";
    assert!(sum("tern_path_sent_last_minute", path) >= 1.0, "{text}");
    assert_eq!(sum("tern_config_reloads_total", ""), 0.0);
    assert_eq!(sum("tern_delivery_log_dropped_total", ""), 0.0);

    // The shipped Grafana dashboard asks only for metrics Tern serves.
    let dash = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/ops/grafana/tern.json"
    ))
    .unwrap();
    let names: std::collections::BTreeSet<&str> = dash
        .match_indices("tern_")
        .map(|(i, _)| {
            let rest = &dash[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            rest[..end].trim_end_matches("_bucket")
        })
        .filter(|n| *n != "tern_mta")
        .collect();
    assert!(names.len() >= 6, "{names:?}");
    for n in names {
        assert!(
            text.contains(&format!("# HELP {n} ")),
            "the dashboard uses {n}, which /metrics lacks"
        );
    }
    mx.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn an_operator_suspends_a_domain_from_the_cli_and_resumes_it() {
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    let a = admin(&net);
    let tern = Tern::start(config(&net, &a)).await;
    let file = cli_file(&net, &a);
    wait_up(&a).await;
    let args = vec![
        "suspend",
        "--domain",
        "Alpha.test",
        "--for",
        "2h",
        "--reason",
        "complaint spike",
    ];
    let (ok, out) = tern_cli(args, file.clone()).await;
    assert!(
        ok && out.contains("domain alpha.test: suspended until"),
        "{out}"
    );

    submit_ok(&tern, &["x@alpha.test"]).await;
    // It waits in its destination's scheduled queue, showing why; nothing
    // is tried, nothing is written.
    let cfg = a.clone();
    let held = async {
        for _ in 0..200 {
            let cfg = cfg.clone();
            let rows: Vec<tern::views::DestRow> =
                call(move || get(&cfg, "/v1/destinations")).await.unwrap();
            if let Some(r) = rows.into_iter().find(|r| r.scheduled == 1) {
                return Some(r);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    };
    let row = held.await.expect("scheduled, waiting");
    let why = row.held.unwrap_or_default();
    assert!(
        why.contains("suspended by rule operator") && why.contains("complaint spike"),
        "{why}"
    );
    let (_, out) = tern_cli(vec!["queue", "by", "site"], file.clone()).await;
    assert!(
        out.contains("waiting: domain alpha.test suspended"),
        "{out}"
    );
    assert_eq!(mx.tries("x@alpha.test"), 0);

    let (ok, out) = tern_cli(vec!["resume", "--domain", "alpha.test"], file.clone()).await;
    assert!(ok && out.contains("domain alpha.test: resumed"), "{out}");
    assert!(
        until(WAIT, || mx.tries("x@alpha.test") == 1).await,
        "flows at once after the resume"
    );
    let attempts = || {
        let log = net.log();
        let d = common::net::records(&log, "delivery", "x@alpha.test");
        let t = common::net::records(&log, "transient_failure", "x@alpha.test");
        (d.first().map(|r| r["attempts"].clone()), t.len())
    };
    assert!(until(WAIT, || attempts().0.is_some()).await);
    assert_eq!(attempts(), (Some(1.into()), 0), "the wait was no attempt");
    let (ok, out) = tern_cli(vec!["resume", "--domain", "alpha.test"], file.clone()).await;
    assert!(ok && out.contains("was not suspended"), "{out}");
    let (ok, _) = tern_cli(
        vec![
            "suspend",
            "--domain",
            "alpha.test",
            "--pool",
            "default",
            "--for",
            "1m",
        ],
        file,
    )
    .await;
    assert!(!ok, "two targets are refused");
    tern.stop().await;
    mx.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn retry_now_makes_deferred_mail_go_at_once() {
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    let a = admin(&net);
    let tern = Tern::start(config(&net, &a)).await;
    // "flaky" is deferred once (retry in 10 minutes), then accepted.
    submit_ok(&tern, &["flaky@alpha.test"]).await;
    assert!(until(WAIT, || mx.tries("flaky@alpha.test") == 1).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cfg = a.clone();
    let other = tern::admin::types::Retry {
        domain: Some("beta.test".into()),
        id: None,
    };
    let none: tern::admin::types::Retried = call(move || send(&cfg, "POST", "/v1/retry", &other))
        .await
        .unwrap();
    assert_eq!(none.messages, 0, "another domain");
    let cfg = a.clone();
    let this = tern::admin::types::Retry {
        domain: Some("Alpha.test".into()),
        id: None,
    };
    let done: tern::admin::types::Retried = call(move || send(&cfg, "POST", "/v1/retry", &this))
        .await
        .unwrap();
    assert_eq!((done.messages, done.recipients), (1, 1));
    assert!(
        until(WAIT, || mx.received().len() == 1).await,
        "delivered without waiting for the retry time"
    );
    tern.stop().await;
    mx.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn a_purge_removes_only_the_matching_mail_and_reports_progress() {
    let net = Net::new(ZONE).await;
    let (mx, other) = (
        net.sink_with(10, refusing()).await,
        net.sink_with(13, refusing()).await,
    );
    let a = admin(&net);
    let tern = Tern::start(config(&net, &a)).await;
    for to in ["a@alpha.test", "b@alpha.test", "c@sender.test"] {
        submit_ok(&tern, &[to]).await;
    }
    assert!(until(WAIT, || mx.connections() >= 1 && other.connections() >= 1).await);
    tokio::time::sleep(Duration::from_millis(300)).await; // all deferred, none in flight
    let cfg = a.clone();
    let refused = call(move || {
        send::<tern::admin::types::JobStarted, _>(
            &cfg,
            "POST",
            "/v1/purge",
            &tern::admin::types::Purge::default(),
        )
    })
    .await;
    assert!(
        matches!(refused, Err(CallError::Status { status: 400, .. })),
        "{refused:?}"
    );

    let file = cli_file(&net, &a);
    let (_, out) = tern_cli(vec!["purge", "--domain", "alpha.test"], file).await;
    assert!(out.contains("purged 2 message(s) of 3 looked at"), "{out}");
    let cfg = a.clone();
    let s: QueueSummary = call(move || get(&cfg, "/v1/queue/summary")).await.unwrap();
    assert_eq!(s.messages, 1);
    assert_eq!(s.domains[0].domain, "sender.test");
    tern.stop().await;
    let log = net.log();
    assert_eq!(log.iter().filter(|r| r["type"] == "purged").count(), 2);
    assert!(
        !log.iter().any(|r| r["type"] == "bounce"),
        "a purge never bounces"
    );
    mx.stop().await;
    other.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn reload_refuses_a_bad_file_and_applies_a_new_rate_to_waiting_mail() {
    use tern::admin::types::{ConfigState, Reloaded};
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    let a = admin(&net);
    let file = net.dir.path().join("tern.toml");
    let with_rate = |rate: &str| {
        let mut c = config(&net, &a);
        let mut p = tern::config::ProviderConfig {
            name: "alpha".into(),
            mx_suffixes: vec![".alpha.test".into()],
            ..Default::default()
        };
        p.per_path.message_rate = Some(rate.parse().unwrap());
        c.shaping.providers.push(p);
        c
    };
    let slow = with_rate("1/h,burst=1");
    let tern = start_from_file(slow.clone(), &file).await;
    for to in ["a@alpha.test", "b@alpha.test", "c@alpha.test"] {
        submit_ok(&tern, &[to]).await;
    }
    assert!(until(WAIT, || mx.received().len() == 1).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mx.received().len(), 1, "one an hour");

    // A broken file is refused, every error reported; the old one stays.
    let broken = toml::to_string(&slow)
        .unwrap()
        .replace("1/h,burst=1", "fast")
        + "\n[nope]\n";
    std::fs::write(&file, broken).unwrap();
    let cfg = a.clone();
    let refused = call(move || send::<Reloaded, _>(&cfg, "POST", "/v1/reload", &())).await;
    let Err(CallError::Status {
        status: 422,
        message,
    }) = refused
    else {
        panic!("{refused:?}")
    };
    assert!(
        message.contains("message_rate") || message.contains("nope"),
        "{message}"
    );
    let raw = call({
        let cfg = a.clone();
        move || tern::admin::client::get::<ConfigState>(&cfg, "/v1/config")
    })
    .await
    .unwrap();
    assert_eq!(raw.failed_reloads, 1);
    let cfg = a.clone();
    let metrics = call(move || tern::admin::client::get_text(&cfg, "/metrics"))
        .await
        .unwrap();
    assert!(
        metrics.contains("tern_config_reloads_total{result=\"refused\"} 1"),
        "{metrics}"
    );
    assert_eq!(raw.history.len(), 1, "still the first config");

    // A faster rate applies to the mail already waiting.
    let fast = with_rate("60/m,burst=10");
    let done = reload_with(&a, &file, &fast).await.unwrap();
    // The test harness moved the listener to a free port, so the file's
    // listener differs from the running one: reported, not applied.
    assert_eq!(done.needs_restart, ["listener"], "{done:?}");
    assert!(
        until(WAIT, || mx.received().len() == 3).await,
        "the waiting mail left at the new rate"
    );
    let cfg = a.clone();
    let state: ConfigState = call(move || get(&cfg, "/v1/config")).await.unwrap();
    assert_eq!(state.history.len(), 2);
    assert_eq!(state.running.unwrap().id, done.id);
    tern.stop().await;
    mx.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn a_dead_site_pause_is_listed_and_resume_or_retry_lift_it_at_once() {
    // dead.test's only MX is .12, where nothing listens.
    let net = Net::new(&format!("{ZONE}\ndead IN MX 10 dead.backup\n")).await;
    let a = admin(&net);
    let mut cfg = config(&net, &a);
    cfg.delivery.connection_limit = 1;
    cfg.delivery.dead_site_failures = 1;
    cfg.delivery.dead_site_pause = tern::config::values::Duration::from_secs(3600);
    let tern = Tern::start(cfg).await;
    let file = cli_file(&net, &a);
    wait_up(&a).await;
    let tried = || {
        let log = net.log();
        ["r0", "r1", "r2"]
            .iter()
            .map(|r| {
                common::net::records(&log, "transient_failure", &format!("{r}@dead.test")).len()
            })
            .sum::<usize>()
    };
    for r in ["r0", "r1", "r2"] {
        submit_ok(&tern, &[&format!("{r}@dead.test")]).await;
    }
    assert!(
        until(WAIT, || tried() == 1).await,
        "one refused connection pauses the path"
    );
    let (ok, out) = tern_cli(vec!["actions"], file.clone()).await;
    assert!(ok && out.contains("dead_site"), "{out}");

    // Resuming the site lifts the pause: the mail that waited is tried
    // at once (and pauses the path again, the site being still dead).
    let (ok, out) = tern_cli(vec!["resume", "--site", "dead.backup.test"], file.clone()).await;
    assert!(ok && out.contains("resumed"), "{out}");
    assert!(until(WAIT, || tried() == 2).await, "tried again at once");

    // So does "retry now" for the domain.
    let (ok, out) = tern_cli(vec!["retry", "--domain", "dead.test"], file).await;
    assert!(ok && out.contains("1 dead-site pause(s) lifted"), "{out}");
    assert!(until(WAIT, || tried() == 3).await, "tried again at once");
    tern.stop().await;
    net.stop().await;
}
