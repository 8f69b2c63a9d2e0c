//! Tern's own state survives a kill -9 and a reload: an operator's
//! suspension, a slow-down a receiver asked for, and the warm-up count of
//! the day, kept in the spool. `tern run` is a child process here, killed
//! with SIGKILL and started again on the same spool.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::admin::{admin, call, cli_file, config, reload_with, tern_cli, wait_up};
use common::net::{Net, ZONE, submit, until};
use tern::admin::client::get;
use tern::shaping::rules::Action;

/// Starts `tern run` on `file`.
fn start(file: &std::path::Path, stderr: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["run", "--config"])
        .arg(file)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .expect("start tern")
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status();
}

async fn actions(a: &tern::config::AdminConfig) -> Vec<Action> {
    let a = a.clone();
    call(move || get::<Vec<Action>>(&a, "/v1/shaping/actions").unwrap_or_default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspensions_slowdowns_and_warmup_counts_survive_kill_9_and_a_reload() {
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    let a = admin(&net);
    let mut cfg = config(&net, &a);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    cfg.listeners[0].address = port;
    let today = tern::clock::rfc3339(std::time::SystemTime::now())[..10].to_owned();
    // The pool's source, "a".
    let a_source = cfg.sources.iter_mut().find(|s| s.name == "a").unwrap();
    a_source.warmup = Some(tern::config::WarmupConfig {
        start: today,
        daily: vec![3],
        per_provider: false,
    });
    cfg.shaping.rules.push(tern::config::RuleConfig {
        name: "busy".into(),
        codes: vec![450],
        action: tern::config::RuleAction::SlowDown,
        floor: Some("6/m".parse().unwrap()),
        ..tern::config::RuleConfig::default()
    });
    let file = net.dir.path().join("tern.toml");
    std::fs::write(&file, toml::to_string(&cfg).unwrap()).unwrap();
    let stderr = net.dir.path().join("stderr");
    let child = start(&file, &stderr);
    wait_up(&a).await;

    // An operator's suspension; a slow-down (the "450 busy" reply); and
    // the warming source's share of 3 used: the 450, then two deliveries.
    let cli = cli_file(&net, &a);
    let suspend = vec!["suspend", "--domain", "sender.test", "--for", "2h"];
    assert!(tern_cli(suspend, cli.clone()).await.0);
    let body = b"Subject: x\r\n\r\nx\r\n";
    for to in ["tempfail@alpha.test", "one@alpha.test", "two@alpha.test"] {
        assert!(
            submit(port, "app@shop.test", &[to], body)
                .await
                .starts_with("250")
        );
    }
    assert!(until(Duration::from_secs(30), || mx.received().len() == 2).await);
    assert_eq!(actions(&a).await.len(), 2);
    tokio::time::sleep(Duration::from_secs(3)).await; // the counts are kept every 2 s

    signal(&child, "-KILL");
    let _ = call(move || {
        let mut c = child;
        c.wait()
    })
    .await;
    let child = start(&file, &stderr);
    wait_up(&a).await;
    let kept = actions(&a).await;
    assert!(
        kept.iter()
            .any(|x| x.rule == "operator" && x.target.to_string() == "domain sender.test"),
        "{kept:?}"
    );
    assert!(
        kept.iter().any(|x| x.rule == "busy" && x.rate.is_some()),
        "{kept:?}"
    );
    // The share is used: a message now waits for tomorrow.
    assert!(
        submit(port, "app@shop.test", &["three@alpha.test"], body)
            .await
            .starts_with("250")
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(mx.received().len(), 2, "the day's share is not sent twice");

    // A reload keeps them, unless the rule that made one is gone.
    reload_with(&a, &file, &cfg).await.unwrap();
    assert_eq!(actions(&a).await.len(), 2);
    cfg.shaping.rules.clear();
    reload_with(&a, &file, &cfg).await.unwrap();
    let left = actions(&a).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].rule, "operator");

    signal(&child, "-TERM");
    let status = call(move || {
        let mut c = child;
        c.wait()
    })
    .await
    .unwrap();
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&stderr).unwrap_or_default()
    );
    mx.stop().await;
    net.stop().await;
}
