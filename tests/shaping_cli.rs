//! `tern shaping show` and the shaping part of `tern check-config`, run as
//! the binary.

use std::path::Path;
use std::process::Command;

fn tern() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tern"))
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("run tern");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn show_prints_each_effective_value_and_its_layer() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("providers.toml"),
        "[[provider]]\nname = \"big\"\nmx_suffixes = [\".big.example\"]\nper_path = { connection_limit = 4, message_rate = \"600/m\" }\n",
    )
    .unwrap();
    let config = dir.path().join("t.toml");
    std::fs::write(
        &config,
        "[[source]]\nname = \"ip1\"\n[[pool]]\nname = \"default\"\nsources = [{ source = \"ip1\" }]\n\
         [shaping]\ninclude = \"providers.toml\"\n\
         [[shaping.domain]]\ndomain = \"shop.example\"\nper_path = { max_messages_per_connection = 7 }\ntotal = { message_rate = \"100/h\" }\n",
    )
    .unwrap();
    let (ok, out, err) = run(tern()
        .args([
            "shaping",
            "show",
            "--domain",
            "shop.example",
            "--mx",
            "MX2.big.example,mx1.big.example",
            "--config",
        ])
        .arg(&config));
    assert!(ok, "{err}");
    for line in [
        "site      mx1.big.example,mx2.big.example",
        "provider  big",
        "source    ip1",
        "paths     of its own",
    ] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
    let row = |key: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        row("connection_limit"),
        "connection_limit 4 from provider big"
    );
    assert_eq!(
        row("message_rate"),
        "message_rate 600/m,burst=10 from provider big",
        "the burst in force is shown: one second's worth by default"
    );
    assert_eq!(
        row("max_messages_per_connection"),
        "max_messages_per_connection 7 from domain shop.example"
    );
    assert_eq!(
        row("idle_timeout"),
        "idle_timeout 10s from defaults ([delivery])"
    );
    assert!(
        out.contains("domain shop.example") && out.contains("message_rate 100/h"),
        "{out}"
    );
}

#[test]
fn shipped_presets_load_and_match_the_big_providers() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tern.toml");
    for (mx, provider) in [
        ("gmail-smtp-in.l.google.com", "gmail"),
        ("mta5.am0.yahoodns.net", "yahoo"),
        ("hotmail-com.olc.protection.outlook.com", "microsoft"),
        ("mx01.mail.icloud.com", "apple"),
        ("smtp-in.orange.fr", "orange"),
        ("mx1a1.comcast.net", "comcast"),
        ("mx00.emig.gmx.net", "gmx-webde"),
        ("eu-smtp-inbound-1.mimecast.com", "mimecast"),
    ] {
        let (ok, out, err) = run(tern()
            .args([
                "shaping",
                "show",
                "--domain",
                "x.example",
                "--mx",
                mx,
                "--config",
            ])
            .arg(&config));
        assert!(ok, "{err}");
        assert!(
            out.contains(&format!("provider  {provider}\n")),
            "{mx}: {out}"
        );
    }
}

#[test]
fn check_config_reports_shaping_mistakes_in_either_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.toml"),
        "[[provider]]\nname = \"x\"\nmx_suffixes = []\nper_path = { connection_limit = 0 }\n",
    )
    .unwrap();
    let config = dir.path().join("t.toml");
    std::fs::write(
        &config,
        "[shaping]\ninclude = \"p.toml\"\n[[shaping.source]]\nsource = \"nope\"\n[[shaping.domain]]\ndomain = \"bad domain\"\nper_path = { message_rate = \"fast\" }\n",
    )
    .unwrap();
    let (ok, _, err) = run(tern().arg("check-config").arg(&config));
    assert!(!ok);
    for e in [
        "t.toml:4:10: shaping.source[0].source: no [[source]] is named \"nope\"",
        "shaping.domain[0].domain: \"bad domain\" is not an ASCII domain name",
        "shaping.domain[0].per_path.message_rate: invalid rate \"fast\"",
    ] {
        assert!(err.contains(e), "missing {e:?} in\n{err}");
    }
    // The include file is read once the main file is valid.
    std::fs::write(&config, "[shaping]\ninclude = \"p.toml\"\n").unwrap();
    let (ok, _, err) = run(tern().arg("check-config").arg(&config));
    assert!(!ok);
    for e in [
        "p.toml:3:15: provider[0].mx_suffixes: must list at least one MX host suffix",
        "p.toml:4:33: provider[0].per_path.connection_limit: must be at least 1",
    ] {
        assert!(err.contains(e), "missing {e:?} in\n{err}");
    }
    std::fs::write(&config, "[shaping]\ninclude = \"missing.toml\"\n").unwrap();
    let (ok, _, err) = run(tern().arg("check-config").arg(&config));
    assert!(
        !ok && err.contains("missing.toml: cannot read the shaping include file"),
        "{err}"
    );
}

#[test]
fn actions_lists_the_suspensions_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("t.toml");
    let spool = dir.path().join("spool");
    std::fs::write(
        &config,
        format!(
            "[queue]\npath = \"{}\"\n[admin]\nenabled = false\n",
            spool.display()
        ),
    )
    .unwrap();
    let (ok, out, err) = run(tern().args(["shaping", "actions", "--config"]).arg(&config));
    assert!(
        ok && out.contains("no automatic actions in force"),
        "{out}{err}"
    );
    let action = |target: &str, end: &str| {
        format!(
            r#"{{"target":{target},"rule":"busy","reply":"450 4.2.0 mailbox busy","start":"2026-01-01T00:00:00.000Z","end":"{end}"}}"#
        )
    };
    let state = format!(
        "[{},{}]",
        action(r#"{"provider":"big"}"#, "2999-01-01T00:00:00.000Z"),
        action(r#"{"source":"ip1"}"#, "2001-01-01T00:00:00.000Z")
    );
    // What a stopped daemon kept in its spool.
    let (q, _) = queue::Queue::open(queue::QueueOptions::new(&spool)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(q.put_state(tern::state::ACTIONS, state.into()))
        .unwrap();
    q.close();
    drop(q);
    let (ok, out, err) = run(tern().args(["shaping", "actions", "--config"]).arg(&config));
    assert!(ok, "{err}");
    assert!(
        out.contains("provider big: suspended by rule busy"),
        "{out}"
    );
    assert!(
        !out.contains("source ip1"),
        "an ended action is not listed: {out}"
    );
}

#[test]
fn check_config_reports_bad_rules() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("t.toml");
    std::fs::write(
        &config,
        "[[shaping.rule]]\nname = \"a\"\ntext = \"(unclosed\"\n[[shaping.rule]]\nname = \"b\"\ncodes = [250]\nduration = \"1m\"\n[[shaping.rule]]\nname = \"c\"\nduration = \"1m\"\n",
    )
    .unwrap();
    let (ok, _, err) = run(tern().arg("check-config").arg(&config));
    assert!(!ok);
    for e in [
        "shaping.rule[0].text: not a valid regular expression",
        "shaping.rule[0].duration: must be set",
        "shaping.rule[1].codes[0]: 250 is not a 4xx or 5xx reply code",
        "shaping.rule[2].codes: a rule needs codes, enhanced or text to match on",
    ] {
        assert!(err.contains(e), "missing {e:?} in\n{err}");
    }
    std::fs::write(
        &config,
        "[[shaping.rule]]\nname = \"d\"\ncodes = [421]\nprovider = \"nobody\"\nduration = \"1m\"\n",
    )
    .unwrap();
    let (ok, _, err) = run(tern().arg("check-config").arg(&config));
    assert!(
        !ok && err.contains("no [[shaping.provider]] is named \"nobody\""),
        "{err}"
    );
}
