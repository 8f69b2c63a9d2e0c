//! The operator's CLI against a daemon the test starts, run as the binary:
//! a half-edited config never locks it out (only `[admin]` is read, or
//! `--admin` / `TERN_ADMIN` and `TERN_TOKEN` skip the file), `--json` is
//! honoured by every verb that prints and refused by those that cannot,
//! and a typo in a provider, pool or source name is an error naming the
//! closest known one.

mod common;

use std::path::Path;
use std::process::Command;

use common::admin::{TOKEN, admin, call, config, refusing, submit_ok, wait_up};
use common::net::{Net, Tern, WAIT, ZONE, pool, until};
use tern::config::ProviderConfig;

/// Runs `tern ARGS` with `env`; (success, stdout, stderr).
async fn cli(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    call(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(&args)
            .env_remove("TERN_ADMIN")
            .env_remove("TERN_TOKEN")
            .envs(env)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    file.to_string_lossy().into_owned()
}

#[tokio::test]
async fn a_broken_config_never_locks_the_cli_out_and_typos_are_named() {
    let net = Net::new(ZONE).await;
    let a = admin(&net);
    let mut cfg = config(&net, &a);
    cfg.pools.push(pool("campaigns", &[("a", 1)]));
    cfg.shaping.providers.push(ProviderConfig {
        name: "gmail".into(),
        mx_suffixes: vec![".google.com".into()],
        ..ProviderConfig::default()
    });
    let _tern = Tern::start(cfg).await;
    wait_up(&a).await;
    let dir = net.dir.path();
    let admin_section = format!(
        "[admin]\naddress = \"{}\"\ntoken = \"{TOKEN}\"\n",
        a.address
    );
    // Bad values elsewhere, then a syntax error elsewhere.
    let invalid = write(
        dir,
        "invalid.toml",
        &format!("[queue]\npath = 5\n[[listener]]\nadress = \"x\"\n{admin_section}"),
    );
    let broken = write(
        dir,
        "broken.toml",
        &format!("{admin_section}[delivery\nretry_first = \n"),
    );
    for file in [&invalid, &broken] {
        let (ok, out, err) = cli(
            &["suspend", "--pool", "campaigns", "--for", "5m", "-c", file],
            &[],
        )
        .await;
        assert!(ok, "{file}: {out}{err}");
        assert!(out.contains("pool campaigns: suspended until"), "{out}");
    }

    let (ok, _, err) = cli(
        &[
            "suspend",
            "--provider",
            "gmial",
            "--for",
            "5m",
            "-c",
            &invalid,
        ],
        &[],
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("no provider is named \"gmial\" (did you mean \"gmail\"?)"),
        "{err}"
    );
    let (ok, _, err) = cli(
        &[
            "suspend", "--pool", "campains", "--for", "5m", "-c", &invalid,
        ],
        &[],
    )
    .await;
    assert!(!ok && err.contains("did you mean \"campaigns\""), "{err}");
    let (ok, _, err) = cli(&["resume", "--source", "zz", "-c", &invalid], &[]).await;
    assert!(ok, "resuming what is not suspended is no error: {err}");

    // No config file at all: the URL and token from the environment.
    let url = format!("http://{}", a.address);
    let env = [("TERN_ADMIN", url.as_str()), ("TERN_TOKEN", TOKEN)];
    let missing = "/nonexistent/tern.toml";
    let (ok, out, err) = cli(&["retry", "--json", "-c", missing], &env).await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert!(v["messages"].is_u64(), "{out}");
    let (ok, out, err) = cli(&["resume", "--pool", "campaigns", "--json"], &env).await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["cancelled"], true, "{out}");
    // The live view, one frame as JSON.
    let (ok, out, err) = cli(&["top", "--once", "--json", "--interval", "0.2"], &env).await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert!(
        v["accepted_per_sec"].is_number() && v["paths"].is_array(),
        "{out}"
    );
    let (ok, out, _) = cli(&["top", "--once", "--interval", "0.2"], &env).await;
    assert!(
        ok && out.contains("accepted") && out.contains("automatic actions in force"),
        "{out}"
    );
    // --admin on the command line wins over the environment; a wrong
    // token is refused.
    let (ok, _, err) = cli(
        &["retry", "--admin", &url, "-c", missing],
        &[("TERN_TOKEN", "not-the-token-at-all")],
    )
    .await;
    assert!(!ok && err.contains("401"), "{err}");
    let (ok, _, err) = cli(&["retry", "--admin", "localhost:1", "-c", missing], &[]).await;
    assert!(!ok && err.contains("http://"), "{err}");
}

#[tokio::test]
async fn json_is_printed_or_refused_never_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "bad.toml",
        "[queue]\nsegment_size = \"a lot\"\n",
    );
    let (ok, out, _) = cli(&["check-config", "--json", &bad], &[]).await;
    assert!(!ok);
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["ok"], false);
    assert_eq!(v["errors"][0]["key"], "queue.segment_size", "{out}");
    assert_eq!(v["errors"][0]["line"], 2, "{out}");
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config/tern.toml");
    let (ok, out, err) = cli(&["check-config", "--json", shipped], &[]).await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert!(v["summary"].is_array(), "{out}");

    // The daemon is down: the spool's view, as JSON too.
    let spool = dir.path().join("spool");
    let cfg = write(
        dir.path(),
        "down.toml",
        &format!(
            "[queue]\npath = \"{}\"\n[admin]\naddress = \"127.0.0.1:1\"\n",
            spool.display()
        ),
    );
    let (ok, out, err) = cli(&["queue", "summary", "--json", "-c", &cfg], &[]).await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["messages"], 0, "{out}");
    let (ok, out, err) = cli(&["actions", "--json", "-c", &cfg], &[]).await;
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        serde_json::json!([])
    );

    for verb in [
        &["run"][..],
        &[
            "dkim",
            "record",
            "--domain",
            "d",
            "--selector",
            "s",
            "--key",
            "k",
        ],
    ] {
        let mut args = verb.to_vec();
        args.push("--json");
        let out = call({
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            move || {
                Command::new(env!("CARGO_BIN_EXE_tern"))
                    .args(&args)
                    .output()
                    .unwrap()
            }
        })
        .await;
        assert_eq!(out.status.code(), Some(2), "{verb:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("has no JSON output"));
    }
}

#[tokio::test]
async fn one_message_is_retried_or_purged_by_its_queue_id() {
    let net = Net::new(ZONE).await;
    let mx = net.sink_with(10, refusing()).await;
    let a = admin(&net);
    let tern = Tern::start(config(&net, &a)).await;
    wait_up(&a).await;
    submit_ok(&tern, &["x@alpha.test"]).await;
    submit_ok(&tern, &["y@alpha.test"]).await;
    assert!(until(WAIT, || mx.connections() >= 2).await, "both deferred");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let cfg = a.clone();
    let page: tern::admin::types::MessagePage =
        call(move || tern::admin::client::get(&cfg, "/v1/queue/messages?domain=alpha.test"))
            .await
            .unwrap();
    assert_eq!(page.messages.len(), 2);
    let id = page.messages[0].id.clone();
    let url = format!("http://{}", a.address);
    let env = [("TERN_ADMIN", url.as_str()), ("TERN_TOKEN", TOKEN)];
    let (ok, out, err) = cli(&["retry", "--id", &id, "--json"], &env).await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["messages"], 1, "only that message: {out}");
    let (ok, out, err) = cli(&["queue", "list", "--id", &id, "--json"], &env).await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["messages"].as_array().map(Vec::len), Some(1), "{out}");
    let (ok, out, err) = cli(&["purge", "--id", &id], &env).await;
    assert!(ok && out.contains("purged 1"), "{out}{err}");
    let cfg = a.clone();
    let page: tern::admin::types::MessagePage =
        call(move || tern::admin::client::get(&cfg, "/v1/queue/messages?domain=alpha.test"))
            .await
            .unwrap();
    assert_eq!(page.messages.len(), 1, "the other message stays");
    assert_ne!(page.messages[0].id, id);
    let (ok, _, err) = cli(&["purge", "--id", "not-an-id"], &env).await;
    assert!(
        !ok && err.contains("400") && err.contains("not-an-id"),
        "{err}"
    );
}

#[tokio::test]
async fn held_mail_is_never_tried_until_released_and_the_queue_lists_it_by_state() {
    let net = Net::new(ZONE).await;
    let mx = net.sink_with(10, refusing()).await;
    let a = admin(&net);
    let tern = Tern::start(config(&net, &a)).await;
    wait_up(&a).await;
    submit_ok(&tern, &["x@alpha.test"]).await;
    submit_ok(&tern, &["y@alpha.test"]).await;
    assert!(until(WAIT, || mx.connections() >= 2).await, "both deferred");
    let url = format!("http://{}", a.address);
    let env = [("TERN_ADMIN", url.as_str()), ("TERN_TOKEN", TOKEN)];
    let list = |args: &'static [&'static str]| async move {
        let mut all = vec!["queue", "list", "--json"];
        all.extend_from_slice(args);
        let (ok, out, err) = cli(&all, &env).await;
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["messages"].as_array().cloned().unwrap_or_default()
    };
    let mut deferred = 0;
    for _ in 0..50 {
        deferred = list(&["--state", "deferred"]).await.len();
        if deferred == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        deferred, 2,
        "both deferred once their attempts are recorded"
    );

    let (ok, out, err) = cli(&["hold", "--domain", "alpha.test", "--json"], &env).await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["done_items"], 2, "{out}");
    let held = list(&["--state", "held"]).await;
    assert_eq!(held.len(), 2, "{held:?}");
    assert_eq!(held[0]["held"], 1);
    assert!(list(&["--state", "deferred"]).await.is_empty());
    let (ok, out, _) = cli(&["queue", "summary"], &env).await;
    assert!(ok && out.contains("2 recipient(s) held"), "{out}");

    // Retrying everything leaves held mail alone.
    let tries = mx.connections();
    let (ok, out, err) = cli(&["retry", "--json"], &env).await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["messages"], 0, "{out}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(mx.connections(), tries, "held mail is never tried");

    let id = held[0]["id"].as_str().unwrap().to_owned();
    let (ok, out, err) = cli(&["release", "--id", &id], &env).await;
    assert!(ok && out.contains("released 1"), "{out}{err}");
    assert!(
        until(WAIT, || mx.connections() > tries).await,
        "released mail is tried at once"
    );
    let still = list(&["--state", "held"]).await;
    assert_eq!(still.len(), 1);
    assert_ne!(still[0]["id"].as_str(), Some(id.as_str()));

    let (ok, _, err) = cli(&["hold", "--provider", "gmial"], &env).await;
    assert!(!ok && err.contains("no provider is named"), "{err}");
    let (ok, _, err) = cli(&["queue", "list", "--state", "stuck"], &env).await;
    assert!(!ok && err.contains("held, sending, waiting"), "{err}");
}

#[tokio::test]
async fn trace_streams_both_sides_of_matching_sessions_without_content() {
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    let a = admin(&net);
    let tern = Tern::start(config(&net, &a)).await;
    wait_up(&a).await;
    let url = format!("http://{}", a.address);
    let env = [("TERN_ADMIN", url.as_str()), ("TERN_TOKEN", TOKEN)];
    let trace = |args: &'static [&'static str]| {
        let env = env.map(|(k, v)| (k, v.to_owned()));
        tokio::spawn(async move {
            let mut all = vec!["trace", "--json", "--for", "20s"];
            all.extend_from_slice(args);
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            cli(&all, &env).await
        })
    };
    let outbound = trace(&["--domain", "alpha.test", "--lines", "40"]);
    let inbound = trace(&["--client", "127.0.0.1", "--lines", "3"]);
    // Send until both traces have seen enough (they start watching at
    // some point after being spawned).
    for _ in 0..100 {
        if outbound.is_finished() && inbound.is_finished() {
            break;
        }
        submit_ok(&tern, &["t@alpha.test"]).await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (ok, out, err) = outbound.await.unwrap();
    assert!(ok, "{err}");
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 40, "{out}");
    assert!(
        events
            .iter()
            .all(|e| e["side"] == "out" && e["domain"] == "alpha.test")
    );
    let sent: Vec<&str> = (events.iter())
        .filter(|e| e["dir"] == ">")
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert!(
        sent.iter()
            .any(|t| t.starts_with("MAIL FROM:<app@shop.test>"))
            && sent.iter().any(|t| t.starts_with("RCPT TO:<t@alpha.test>")),
        "{out}"
    );
    let noted = |e: &serde_json::Value| {
        e["dir"] == "*" && e["text"].as_str().unwrap().starts_with("(message data: ")
    };
    assert!(events.iter().any(noted), "{out}");
    assert!(
        events
            .iter()
            .any(|e| e["dir"] == "<" && e["text"].as_str().unwrap().starts_with("250"))
    );
    assert!(
        !out.contains("Subject: s"),
        "content is never traced: {out}"
    );
    let (ok, out, err) = inbound.await.unwrap();
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines.iter().all(|e| e["side"] == "in"));
    assert!(lines.iter().any(|e| e["dir"] == ">"), "{out}");
    assert!(!mx.received().is_empty());

    let (ok, _, err) = cli(&["trace", "--source", "nosuch", "--for", "1s"], &env).await;
    assert!(!ok && err.contains("no source is named"), "{err}");
}
