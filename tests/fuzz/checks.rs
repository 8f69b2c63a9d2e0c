//! What each fuzz target checks, as plain functions: the cargo-fuzz targets
//! (`fuzz/fuzz_targets/`) call them on libFuzzer's inputs, and the normal
//! suite (`tests/fuzz_corpus.rs`) replays every kept input through them.
//! Each must never panic but where it asserts a property.

#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use queue::{EnvelopeRecipient, MessageId};
use tern::delivery::dsn::{Action, Bounce, Failure, build};
use tern::message::{MessageMeta, Ret};
use tern::smtp::client::parse_reply;
use tern::smtp::server::protocol::{AuthOutcome, Protocol, SessionContext, Step};

/// The SMTP client's reply framing and parsing on arbitrary bytes, and the
/// bounce built from what it returns: a reply's text is one printable
/// line, and no reply text can add a line (a header field) to the bounce.
pub fn reply_dsn(data: &[u8]) {
    let Ok(Some((reply, used))) = parse_reply(data) else {
        return;
    };
    assert!(used <= data.len());
    assert!(
        reply.text.chars().all(|c| !c.is_control()),
        "{:?}",
        reply.text
    );
    let rcpt = EnvelopeRecipient::new("user@example.com");
    let meta = MessageMeta::default();
    let failure = Failure {
        rcpt: &rcpt,
        reply: &reply,
        remote_host: Some("mx.example.com"),
        action: Action::Failed,
    };
    let dsn = build(&bounce(
        &meta,
        failure,
        b"Subject: original\r\n\r\nbody\r\n",
    ));
    let text = String::from_utf8_lossy(&dsn);
    assert!(!text.replace("\r\n", "").contains(['\r', '\n']));
    let fields = |name: &str| text.split("\r\n").filter(|l| l.starts_with(name)).count();
    assert_eq!(fields("Diagnostic-Code:"), 1, "{text}");
    assert_eq!(fields("Final-Recipient:"), 1, "{text}");
}

/// A bounce of one failure, from mta.example to sender@example.com.
fn bounce<'a>(meta: &'a MessageMeta, failure: Failure<'a>, original: &'a [u8]) -> Bounce<'a> {
    let now = std::time::SystemTime::UNIX_EPOCH;
    Bounce {
        hostname: "mta.example",
        id: MessageId::from_u64(1),
        sender: "sender@example.com",
        meta,
        arrival: now,
        now,
        failures: vec![failure],
        original,
        default_ret: Ret::Headers,
        retry_until: None,
    }
}

/// The bounce built from hostile values that reach it from outside: the
/// remote host name (from DNS), the envelope id and original recipient
/// (ESMTP parameters), the reply and the original message. Fields are
/// separated by 0xff in the input. No value can add a line (a header or
/// a status field) to the bounce.
pub fn dsn_fields(data: &[u8]) {
    use tern::message::RecipientParams;
    let mut parts = data.split(|b| *b == 0xff);
    let mut next = || {
        parts
            .next()
            .map(|p| String::from_utf8_lossy(p).into_owned())
    };
    let host = next();
    let envid = next();
    let orcpt = next();
    let reply_text = next().unwrap_or_default();
    let original = next().unwrap_or_default();
    let mut rcpt = EnvelopeRecipient::new("user@example.com");
    rcpt.params = RecipientParams {
        notify: 0,
        orcpt: orcpt.clone(),
    }
    .encode()
    .into();
    let meta = MessageMeta {
        envid: envid.clone(),
        ..MessageMeta::default()
    };
    let reply = tern::smtp::client::RemoteReply {
        code: 550,
        esc: [5, 1, 1],
        text: reply_text,
    };
    let failure = Failure {
        rcpt: &rcpt,
        reply: &reply,
        remote_host: host.as_deref(),
        action: Action::Failed,
    };
    let dsn = build(&bounce(&meta, failure, original.as_bytes()));
    let text = String::from_utf8_lossy(&dsn);
    // Everything before the returned headers: the bounce's own lines.
    let own = text
        .split("Content-Type: text/rfc822-headers")
        .next()
        .unwrap_or_default();
    assert!(!own.replace("\r\n", "").contains(['\r', '\n']), "{own}");
    let fields = |name: &str| own.split("\r\n").filter(|l| l.starts_with(name)).count();
    for (name, n) in [
        ("From:", 1),
        ("To:", 1),
        ("Subject:", 1),
        ("Reporting-MTA:", 1),
        ("Final-Recipient:", 1),
        ("Action:", 1),
        ("Status:", 1),
        ("Diagnostic-Code:", 1),
        ("Remote-MTA:", usize::from(host.is_some())),
        ("Original-Envelope-Id:", usize::from(envid.is_some())),
        ("Original-Recipient:", usize::from(orcpt.is_some())),
    ] {
        assert_eq!(fields(name), n, "{name} in {own}");
    }
}

/// The delivery log's line encoding with hostile field values (a reply
/// text, addresses, host names, an API client's id and metadata, the node
/// name), fields separated by 0xff: one line of valid JSON that reads
/// back as written, whose event id and type the exporter reads right (a
/// value that looks like `"type":"bounce"` never makes a webhook's filter
/// take another event type).
pub fn delivery_log(data: &[u8]) {
    use tern::log::{Kind, Record, frame, json_text, line_seq, line_type};
    const KINDS: [Kind; 5] = [
        Kind::Reception,
        Kind::Delivery,
        Kind::TransientFailure,
        Kind::Bounce,
        Kind::Purged,
    ];
    let kind = KINDS[usize::from(data.first().copied().unwrap_or(0)) % KINDS.len()];
    let seq = data
        .iter()
        .fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(*b));
    let mut parts = data.get(1..).unwrap_or_default().split(|b| *b == 0xff);
    let mut next = || {
        parts
            .next()
            .map(|p| std::borrow::Cow::Owned(String::from_utf8_lossy(p).into_owned()))
    };
    let now = std::time::SystemTime::UNIX_EPOCH;
    let mut r = Record::new(
        kind,
        now,
        next().unwrap_or_default(),
        next().unwrap_or_default(),
    );
    r.recipient = next();
    r.reply = next();
    r.remote_host = next();
    r.message_id = next();
    r.tenant = next();
    r.custom_id = next();
    r.metadata = next().map(|m| serde_json::json!({ "type": m, "note": m }));
    let node = next().unwrap_or_else(|| "node-1".into()).into_owned();
    let mut line = Vec::new();
    frame(
        seq,
        &json_text(&node),
        &serde_json::to_vec(&r).unwrap(),
        &mut line,
    );
    assert_eq!(
        memchr::memchr(b'\n', &line),
        Some(line.len() - 1),
        "one line"
    );
    let v: serde_json::Value = serde_json::from_slice(&line).expect("valid JSON");
    let name = serde_json::to_value(kind).unwrap();
    assert_eq!(v["type"], name);
    assert_eq!(line_type(&line), name.as_str().map(str::as_bytes));
    assert_eq!(line_seq(&line), Some(seq));
    assert_eq!(v["event_id"], format!("{seq:016x}.{node}"));
    assert_eq!(v["queue_id"], &*r.queue_id);
    assert_eq!(v["sender"], &*r.sender);
    for (field, value) in [
        ("recipient", &r.recipient),
        ("reply", &r.reply),
        ("remote_host", &r.remote_host),
        ("message_id", &r.message_id),
        ("tenant", &r.tenant),
        ("custom_id", &r.custom_id),
    ] {
        assert_eq!(
            v.get(field).and_then(|f| f.as_str()),
            value.as_deref(),
            "{field}"
        );
    }
}

/// DKIM signing (Ed25519 and RSA-2048 keys of `tests/fixtures/dkim`) of
/// arbitrary message bytes: a signature field prepended to the message
/// left as it was, or a refusal; never a panic in the signer (which the
/// signing threads would catch and report as `Panicked`).
pub fn dkim_sign(data: &[u8]) {
    use tern::config::{DkimConfig, DkimKeyConfig, KeyAlgorithm};
    use tern::dkim::key::PrivateKey;
    use tern::dkim::{Dkim, SignError};
    static SIGNER: OnceLock<(tokio::runtime::Runtime, Dkim)> = OnceLock::new();
    let (rt, dkim) = SIGNER.get_or_init(|| {
        let key = |selector: &str, algorithm| DkimKeyConfig {
            domain: "shop.example".into(),
            selector: selector.into(),
            algorithm,
            key: "embedded".into(),
        };
        let cfg = DkimConfig {
            keys: vec![
                key("ed", KeyAlgorithm::Ed25519Sha256),
                key("rsa", KeyAlgorithm::RsaSha256),
            ],
            threads: 1,
            ..DkimConfig::default()
        };
        let keys = vec![
            PrivateKey::from_pem(include_bytes!("../fixtures/dkim/ed25519.pem")).unwrap(),
            PrivateKey::from_pem(include_bytes!("../fixtures/dkim/rsa2048.pkcs8.pem")).unwrap(),
        ];
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        (rt, Dkim::with_keys(&cfg, keys).unwrap().unwrap())
    });
    let choice = dkim.choose(Some("shop.example"), "a@shop.example");
    let (out, result) = rt.block_on(dkim.sign(data.to_vec(), choice)).unwrap();
    assert!(
        !matches!(result, Err(SignError::Panicked { .. })),
        "{result:?}"
    );
    if result.is_ok() {
        assert!(
            out.starts_with(b"DKIM-Signature:"),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
        assert!(out.ends_with(data), "the message is left as it was");
    }
}

/// The config loader on arbitrary text: a config or errors, never a panic.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tern::config::parse(std::path::Path::new("fuzz.toml"), text);
    }
}

/// The spool's record checks and decoder on arbitrary bytes.
pub fn spool_record(data: &[u8]) {
    queue::fuzzing::records(data);
}

fn context(strict: bool) -> Arc<SessionContext> {
    static CTX: OnceLock<[Arc<SessionContext>; 2]> = OnceLock::new();
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let ctx = CTX.get_or_init(|| {
        let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
        let mut cfg = tern::config::Config::default();
        cfg.queue.path = dir.path().join("spool");
        cfg.queue.min_free_space = tern::config::values::ByteSize(0);
        cfg.listeners[0].max_message_size = tern::config::values::ByteSize(100_000);
        let (queue, _) = queue::Queue::open(cfg.queue.options()).unwrap();
        let log = Arc::new(tern::log::DeliveryLog::disabled());
        let services = tern::daemon::Services::new(
            &cfg,
            Vec::new(),
            Arc::new(queue),
            log,
            tern::clock::Clock::new(),
        )
        .unwrap();
        let make = |strict: bool| {
            let mut l = cfg.listeners[0].clone();
            l.strict_pipelining = strict;
            Arc::new(tern::daemon::session_context(&cfg, &l, None, &services).unwrap())
        };
        [make(false), make(true)]
    });
    ctx[usize::from(strict)].clone()
}

/// The SMTP server's session fed arbitrary bytes in arbitrary pieces (the
/// first byte: piece size, and whether synchronization is enforced):
/// replies are whole CRLF lines; a message handed over is acknowledged.
pub fn smtp_session(data: &[u8]) {
    let Some((first, input)) = data.split_first() else {
        return;
    };
    let piece = usize::from(*first % 64) + 1;
    let mut p = Protocol::new(context(*first >= 128), "127.0.0.1".parse().unwrap());
    p.greeting();
    let mut pending: Vec<u8> = Vec::new();
    for chunk in input.chunks(piece) {
        pending.extend_from_slice(chunk);
        loop {
            let (used, step) = p.feed(&pending);
            assert!(used <= pending.len());
            pending.drain(..used);
            match step {
                Step::NeedInput => break,
                Step::Close | Step::StartTls => return,
                Step::Deliver(sub) => p.delivered(&Ok(sub.id)),
                Step::Authenticate(login) => {
                    if let Some(Step::Close) = p.authenticated(&login.user, AuthOutcome::Invalid) {
                        return;
                    }
                }
            }
        }
        assert!(p.out.is_empty() || p.out.ends_with(b"\r\n"));
        p.out.clear();
    }
}
