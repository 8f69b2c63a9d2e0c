//! The `tern` binary end to end: `check-config`, `run` until SIGTERM, and
//! `queue summary` on a spool written by the queue crate.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use bytes::Bytes;
use queue::{Envelope, EnvelopeRecipient, NewMessage, Queue, QueueOptions, Timestamp};

fn tern() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tern"))
}

fn output(cmd: &mut Command) -> (bool, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run tern");
    (
        status.success(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// A config in `dir` with its spool at `dir/spool` and its delivery log
/// beside it. Its name server refuses (port 1 of 127.0.0.1), so no real
/// DNS is asked and queued mail stays queued.
fn write_config(dir: &Path) -> PathBuf {
    let path = dir.join("tern.toml");
    let text = format!(
        "[server]\nhostname = \"mta.test\"\n[log]\nlevel = \"info\"\ndeliveries = \"{}\"\n[[listener]]\naddress = \"127.0.0.1:0\"\n[queue]\npath = \"{}\"\nsegment_size = \"1MiB\"\nmin_free_space = \"0B\"\n[dns]\nnameservers = [\"127.0.0.1:1\"]\nattempts = 1\ntimeout = \"1s\"\n[admin]\nenabled = false\n",
        dir.join("deliveries.jsonl").display(),
        dir.join("spool").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn fill_spool(spool: &Path, recipients: &[&[&str]]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (q, _) = Queue::open(QueueOptions::new(spool)).unwrap();
    for (n, rcpts) in recipients.iter().enumerate() {
        let msg = NewMessage {
            id: None,
            envelope: Envelope {
                sender: "app@shop.example".into(),
                meta: Box::default(),
                recipients: rcpts.iter().map(|r| EnvelopeRecipient::new(*r)).collect(),
            },
            arrival: Timestamp::now(),
            first_attempt: Timestamp::now(),
            priority: queue::DEFAULT_PRIORITY,
            body: Bytes::from(format!("Subject: {n}\r\n\r\nhello\r\n")),
        };
        rt.block_on(q.enqueue(msg)).unwrap();
    }
    q.close();
}

fn wait_for_exit(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..1000 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    panic!("tern did not stop within 10 s");
}

#[test]
fn check_config_accepts_the_shipped_default() {
    let (ok, out, err) = output(
        tern()
            .arg("check-config")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tern.toml")),
    );
    assert!(ok, "{err}");
    assert!(out.contains("tern.toml: OK"), "{out}");
    assert!(out.contains("127.0.0.1:2525"), "{out}");
}

#[test]
fn check_config_lists_every_error_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[queue]\nsegment_size = \"tiny\"\ndurabilty = \"fsync\"\n[[listener]]\naddress = \"localhost\"\n[log]\nlevel = \"loud\"\n").unwrap();
    let (ok, _, err) = output(tern().arg("check-config").arg(&bad));
    assert!(!ok);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 5, "{err}");
    assert!(
        lines[0].contains("bad.toml:2:16: queue.segment_size: invalid size \"tiny\""),
        "{err}"
    );
    assert!(
        lines[1].contains("bad.toml:3:1: queue.durabilty: unknown field"),
        "{err}"
    );
    assert!(
        lines[2].contains("bad.toml:5:11: listener[0].address"),
        "{err}"
    );
    assert!(lines[3].contains("bad.toml:7:9: log.level"), "{err}");
    assert!(lines[4].ends_with("4 error(s)"), "{err}");
}

#[test]
fn run_recovers_the_spool_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let spool = dir.path().join("spool");
    fill_spool(
        &spool,
        &[&["a@one.example", "b@two.example"], &["c@one.example"]],
    );

    let mut child = tern()
        .args(["run", "--config"])
        .arg(&config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Ready once the writer has started its fresh segment (the spool had one).
    let ready = spool.join("0000000000000002.seg");
    for _ in 0..1000 {
        if ready.exists() || child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(ready.exists(), "tern did not open the spool");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = wait_for_exit(&mut child);
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert!(status.success(), "exit {status:?}\n{log}");
    assert!(
        log.contains("spool recovered messages=2 recipients=3"),
        "{log}"
    );
    assert!(log.contains("SIGTERM received"), "{log}");

    // The lock is released and nothing was lost.
    let (q, report) = Queue::open(QueueOptions::new(&spool)).unwrap();
    assert_eq!((report.messages, report.recipients), (2, 3));
    drop(q);
}

#[test]
fn queue_summary_reads_a_stopped_spool() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    fill_spool(
        &dir.path().join("spool"),
        &[
            &["a@one.example", "b@two.example"],
            &["c@One.Example"],
            &["d@three.example"],
        ],
    );
    let (ok, out, err) = output(tern().args(["queue", "summary", "--config"]).arg(&config));
    assert!(ok, "{err}");
    assert!(out.contains("3 message(s), 4 recipient(s)"), "{out}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip_while(|l| !l.contains("domain"))
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec!["2", "2", "one.example"],
            vec!["1", "1", "three.example"],
            vec!["1", "1", "two.example"]
        ]
    );
}

#[test]
fn queue_summary_without_a_spool_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let (ok, out, _) = output(tern().args(["queue", "summary", "--config"]).arg(&config));
    assert!(ok);
    assert!(out.contains("nothing has been queued"), "{out}");
}

#[test]
fn hash_password_reads_stdin_and_its_hash_is_accepted_by_the_config() {
    use std::io::Write;
    let mut child = tern()
        .args(["auth", "hash-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.toml");
    std::fs::write(&file, format!("[[auth.user]]\nname = \"app\"\npassword_hash = \"{hash}\"\n[[auth.user]]\nname = \"bad\"\npassword_hash = \"s3cret\"\n")).unwrap();
    let (ok, _, err) = output(tern().arg("check-config").arg(&file));
    assert!(!ok);
    assert!(
        err.contains("auth.user[1].password_hash: not a PHC password hash"),
        "{err}"
    );
    assert!(!err.contains("auth.user[0]"), "{err}");
}

#[test]
fn run_refuses_an_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[queue]\nsegment_size = 3\n").unwrap();
    let (ok, _, err) = output(tern().args(["run", "--config"]).arg(&bad));
    assert!(!ok);
    assert!(err.contains("queue.segment_size"), "{err}");
}

#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    // `tern check-config | head -0`: the reader is gone before tern writes.
    let mut child = tern()
        .arg("check-config")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tern.toml"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let status = wait_for_exit(&mut child);
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        status.code(),
        Some(141),
        "as a shell reports SIGPIPE: {err}"
    );
}

#[test]
fn the_log_filter_changes_while_tern_runs() {
    let dir = tempfile::tempdir().unwrap();
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = probe.local_addr().unwrap();
    drop(probe);
    let config = write_config(dir.path());
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[admin]\nenabled = false\n",
        &format!("[admin]\naddress = \"{admin}\"\n"),
    );
    std::fs::write(&config, text).unwrap();
    let mut child = tern()
        .args(["run", "--config"])
        .arg(&config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://{admin}");
    let cli = |args: &[&str]| output(tern().args(args).args(["--admin", &url]));
    let mut up = false;
    for _ in 0..500 {
        if cli(&["log-level"]).0 {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(up, "the admin API answered");
    let (ok, out, err) = cli(&["log-level"]);
    assert!(ok && out.contains("log filter: info"), "{out}{err}");
    let (ok, out, err) = cli(&["log-level", "warn,tern::delivery=debug", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["filter"], "warn,tern::delivery=debug");
    let (ok, _, err) = cli(&["log-level", "inof"]);
    assert!(
        !ok && err.contains("400") && err.contains("not a level"),
        "{err}"
    );
    let (_, out, _) = cli(&["log-level"]);
    assert!(
        out.contains("warn,tern::delivery=debug"),
        "an invalid filter changes nothing: {out}"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(wait_for_exit(&mut child).success());
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert!(log.contains("the diagnostic log filter changed"), "{log}");
}

#[test]
fn completions_and_manual_pages_come_from_the_command_line_itself() {
    let (ok, out, err) = output(tern().args(["completions", "bash"]));
    assert!(ok, "{err}");
    assert!(
        out.contains("complete") && out.contains("log-level"),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man1");
    let (ok, _, err) = output(tern().arg("man").arg(&man));
    assert!(ok, "{err}");
    for page in [
        "tern.1",
        "tern-queue.1",
        "tern-suspend.1",
        "tern-log-level.1",
    ] {
        let text = std::fs::read_to_string(man.join(page)).unwrap_or_default();
        assert!(text.contains(".TH"), "{page} is a manual page");
    }
}
