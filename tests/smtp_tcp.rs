//! Over real TCP on loopback: independent SMTP clients (mail-send, and
//! Python's smtplib against the `tern` binary) with STARTTLS and AUTH; the
//! message is in the queue after a restart. Also relay refusal and the
//! connection limits, which only a real listener applies.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::net::Tern;
use common::{PASSWORD, connector, test_cert};
use mail_send::smtp::message::Message;
use mail_send::{Credentials, SmtpClient};
use queue::QueueOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_send_over_starttls_and_auth_and_the_message_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cert = test_cert(dir.path());
    let mut cfg = common::config(dir.path());
    cfg.listeners[0].tls_certificate = Some(cert.cert_path.clone());
    cfg.listeners[0].tls_key = Some(cert.key_path.clone());
    cfg.listeners[0].relay_from.clear(); // only AUTH may relay
    let tern = Tern::start(cfg.clone()).await;

    let mut c = SmtpClient::connect(tern.addr, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(c.read().await.unwrap().code, 220);
    let caps = c.ehlo("client.test").await.unwrap();
    assert!(caps.has_capability(smtp_proto::EXT_START_TLS));
    let mut c = c
        .start_tls(&connector(&cert.cert_pem), "localhost")
        .await
        .unwrap();
    let caps = c.ehlo("client.test").await.unwrap();
    assert!(caps.has_capability(smtp_proto::EXT_AUTH));
    c.authenticate(Credentials::new("app", PASSWORD), &caps)
        .await
        .unwrap();
    // mail-send ends the data with CRLF.CRLF itself: the body goes without
    // its last CRLF, or an empty line would be added.
    let msg = Message::new(
        "app@shop.example",
        ["rcpt@one.example"],
        "Subject: tcp\r\n\r\nhello over TLS".as_bytes(),
    );
    let r = c.send(msg).await.unwrap();
    assert_eq!(r.code, 250, "{r:?}");
    c.quit().await.unwrap();

    tern.stop().await;
    let (q, report) = common::reopen(cfg.queue.options());
    assert_eq!(report.messages, 1);
    let m = &q.page(None, 10)[0];
    let body = String::from_utf8(q.body(m.id).unwrap().to_vec()).unwrap();
    assert!(
        body.contains("with ESMTPSA id") && body.ends_with("hello over TLS\r\n"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_outside_relay_from_are_refused_at_rcpt() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    cfg.listeners[0].relay_from = vec!["192.0.2.0/24".parse().unwrap()];
    let tern = Tern::start(cfg.clone()).await;
    let mut c = SmtpClient::connect(tern.addr, Duration::from_secs(10))
        .await
        .unwrap();
    c.read().await.unwrap();
    c.ehlo("client.test").await.unwrap();
    let err = c
        .send(Message::new(
            "a@b.example",
            ["c@d.example"],
            b"Subject: x\r\n\r\nx\r\n".as_slice(),
        ))
        .await
        .unwrap_err();
    match err {
        mail_send::Error::UnexpectedReply(r) => {
            assert_eq!((r.code, r.esc), (554, [5, 7, 1]), "{r:?}")
        }
        other => panic!("{other:?}"),
    }
    // Its transaction is still open: close it, or shutdown would grant it
    // the grace period to finish.
    drop(c);
    tern.stop().await;
    assert_eq!(common::reopen(cfg.queue.options()).1.messages, 0);
}

async fn greeting(addr: SocketAddr) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    (s, String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_answer_421() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    cfg.listeners[0].max_connections_per_ip = 2;
    let tern = Tern::start(cfg).await;
    let (a, ga) = greeting(tern.addr).await;
    let (b, gb) = greeting(tern.addr).await;
    assert!(ga.starts_with("220") && gb.starts_with("220"));
    let (_, gc) = greeting(tern.addr).await;
    assert_eq!(
        gc,
        "421 4.7.0 Too many connections from your address, try again later\r\n"
    );
    drop(a);
    // The place is given back when a session ends (bounded wait).
    let mut freed = false;
    for _ in 0..100 {
        let (_s, g) = greeting(tern.addr).await;
        if g.starts_with("220") {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed);
    drop(b);
    tern.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_421_to_waiting_clients() {
    let dir = tempfile::tempdir().unwrap();
    let tern = Tern::start(common::config(dir.path())).await;
    let (mut s, g) = greeting(tern.addr).await;
    assert!(g.starts_with("220"));
    s.write_all(b"EHLO client.test\r\n").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let _ = s.read(&mut buf).await.unwrap();
    let stopping = tokio::spawn(tern.stop());
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("421 4.3.2"));
    stopping.await.unwrap();
}

/// A free port on 127.0.0.1 (bound and released; the daemon binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn has_python() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import smtplib, ssl"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: python3 with smtplib is not available on this machine");
    }
    ok
}

/// Runs `tern run --config <config>`, waits until it listens on `port`,
/// runs `script` with python3, stops tern with SIGTERM, checks that both
/// succeeded, and returns tern's log.
fn run_python_against_tern(config: &std::path::Path, port: u16, script: &str) -> String {
    let mut tern = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["run", "--config"])
        .arg(config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let up = (0..500).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let out = Command::new("python3")
        .args(["-c", script])
        .output()
        .unwrap();
    assert!(
        Command::new("kill")
            .args(["-TERM", &tern.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = tern.wait().unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(&mut tern.stderr.take().unwrap(), &mut log).unwrap();
    assert!(up, "tern did not start listening: {log}");
    assert!(
        out.status.success(),
        "python: {}\ntern: {log}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(status.success(), "{log}");
    log
}

#[test]
fn python_smtplib_relays_through_tern_run_with_starttls_and_auth() {
    if !has_python() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cert = test_cert(dir.path());
    let port = free_port();
    let config = dir.path().join("tern.toml");
    let spool = dir.path().join("spool");
    let text = format!(
        "[server]\nhostname = \"mx.test\"\n[[listener]]\naddress = \"127.0.0.1:{port}\"\ntls_certificate = \"{}\"\ntls_key = \"{}\"\n[queue]\npath = \"{}\"\nmin_free_space = \"0B\"\n[dns]\nnameservers = [\"127.0.0.1:1\"]\nattempts = 1\ntimeout = \"1s\"\n[log]\ndeliveries = \"\"\n[admin]\nenabled = false\n[[auth.user]]\nname = \"app\"\npassword_hash = \"{}\"\n",
        cert.cert_path.display(),
        cert.key_path.display(),
        spool.display(),
        common::password_hash(),
    );
    std::fs::write(&config, text).unwrap();
    let script = format!(
        r#"
import smtplib, ssl
s = smtplib.SMTP("127.0.0.1", {port}, timeout=10)
s.ehlo("python.test")
assert s.has_extn("starttls")
s.starttls(context=ssl.create_default_context(cafile="{cafile}"))
s.ehlo("python.test")
s.login("app", "{PASSWORD}")
refused = s.sendmail("app@shop.example", ["a@one.example", "b@two.example"], b"Subject: from python\r\n\r\nhello\r\n.dot line\r\n")
assert refused == {{}}, refused
s.quit()
"#,
        cafile = cert.cert_path.display()
    );
    let log = run_python_against_tern(&config, port, &script);
    let (q, report) = common::reopen(QueueOptions::new(&spool));
    assert_eq!((report.messages, report.recipients), (1, 2), "{log}");
    let body = q.body(q.page(None, 1)[0].id).unwrap();
    assert!(
        String::from_utf8_lossy(&body)
            .ends_with("Subject: from python\r\n\r\nhello\r\n.dot line\r\n")
    );
}

#[test]
fn python_smtplib_relays_through_tern_run_on_the_shipped_config() {
    if !has_python() {
        return;
    }
    // config/tern.toml as shipped, with only the port and the spool moved
    // so that the test runs beside anything else.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/tern.toml")).unwrap();
    let text = shipped
        .replace(
            "address = \"127.0.0.1:2525\"",
            &format!("address = \"127.0.0.1:{port}\""),
        )
        .replace(
            "path = \"./var/spool\"",
            &format!("path = \"{}\"", dir.path().join("spool").display()),
        )
        .replace("min_free_space = \"200MB\"", "min_free_space = \"0B\"")
        .replace("nameservers = []", "nameservers = [\"127.0.0.1:1\"]")
        .replace(
            "deliveries = \"./var/log/deliveries.jsonl\"",
            &format!("deliveries = \"{}\"", dir.path().join("d.jsonl").display()),
        )
        .replace(
            "address = \"127.0.0.1:8025\"",
            &format!("address = \"127.0.0.1:{}\"", free_port()),
        );
    assert_ne!(text, shipped);
    let config = dir.path().join("tern.toml");
    std::fs::write(&config, text).unwrap();
    // Its shaping presets come along (included relative to the file).
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/shaping.toml"),
        dir.path().join("shaping.toml"),
    )
    .unwrap();
    let script = format!(
        r#"
import smtplib
s = smtplib.SMTP("127.0.0.1", {port}, timeout=10)
code, caps = s.ehlo("python.test")
assert b"PIPELINING" in caps and b"STARTTLS" not in caps, caps
refused = s.sendmail("app@shop.example", ["a@one.example"], b"Subject: default config\r\n\r\nhello\r\n")
assert refused == {{}}, refused
s.quit()
"#
    );
    let log = run_python_against_tern(&config, port, &script);
    assert!(log.contains("message accepted"), "{log}");
    let (_, report) = common::reopen(QueueOptions::new(dir.path().join("spool")));
    assert_eq!(report.messages, 1);
}
