//! DKIM signing end to end: messages submitted to Tern are signed at
//! intake, relayed through the real resolver to a sink, captured there
//! byte for byte, and verified by dkimpy (an independent implementation)
//! and by mail-auth, both reading the public keys from the test's DNS
//! server. A tampered copy must fail both.

mod common;

use std::net::SocketAddr;

use common::dkim::{dkimpy_verify, key, mail_auth_verify, signatures, zone_records};
use common::net::{Net, Tern, WAIT, ZONE, submit_with};
use tern::config::{Config, DkimKeyConfig, DomainSource, PlatformSignature};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The keys of these tests: shop.test signs with RSA-2048 (PKCS#8) and
/// Ed25519; legacy.test with RSA-1024 (PKCS#1); big.test with RSA-4096;
/// platform.test with Ed25519.
fn keys() -> Vec<DkimKeyConfig> {
    vec![
        key("shop.test", "rsa", "rsa2048.pkcs8.pem"),
        key("shop.test", "ed", "ed25519.pem"),
        key("legacy.test", "old", "rsa1024.pkcs1.pem"),
        key("big.test", "s4096", "rsa4096.pkcs1.pem"),
        key("platform.test", "p1", "ed25519.pem"),
    ]
}

async fn net() -> Net {
    Net::new(&format!("{ZONE}\n{}", zone_records(&keys()))).await
}

fn config(net: &Net, canonicalization: &str) -> Config {
    let mut c = net.config();
    c.dkim.keys = keys();
    c.dkim.canonicalization = canonicalization.parse().unwrap();
    c
}

const HEAD: &str = "Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nTo: <x@alpha.test>\r\n";

/// The messages of the verification runs: (sender, body, 8-bit).
fn messages() -> Vec<(&'static str, String, bool)> {
    let long_subject = (0..12)
        .map(|i| format!("word{i} and some more text"))
        .collect::<Vec<_>>()
        .join("\r\n\t");
    let many_to = (0..20)
        .map(|i| format!("user{i}@alpha.test"))
        .collect::<Vec<_>>()
        .join(",\r\n  ");
    let long_value = "x".repeat(60).repeat(20);
    let folded_long = long_value
        .as_bytes()
        .chunks(70)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\r\n ");
    vec![
        (
            "a@shop.test",
            format!(
                "From: Shop <news@shop.test>\r\nSubject: plain\r\nMessage-ID: <1@shop.test>\r\n{HEAD}\r\nhello\r\n"
            ),
            false,
        ),
        (
            "a@shop.test",
            format!(
                "From: \"Shop, Inc\" <news@Shop.Test>\r\nSubject: 8bit\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n{HEAD}\r\nGrüße aus Köln, ünïcödé — ok\r\n"
            ),
            true,
        ),
        (
            "a@shop.test",
            format!(
                "From: news@shop.test\r\nSubject: {long_subject}\r\nCc: {many_to}\r\nX-Long: {folded_long}\r\n{HEAD}\r\nfolded headers\r\n"
            ),
            false,
        ),
        (
            "a@shop.test",
            format!(
                "From: news@shop.test\r\nSubject:   lots   of\t spaces   \r\n{HEAD}\r\ntrailing spaces   \r\n\r\n\r\n\r\n"
            ),
            false,
        ),
        (
            "a@shop.test",
            format!(
                "From: news@shop.test\r\nSubject: dots\r\n{HEAD}\r\n.\r\n..\r\n.leading dot\r\nmiddle\r\n.\r\nend\r\n"
            ),
            false,
        ),
        (
            "a@legacy.test",
            format!("From: old@legacy.test\r\nSubject: 1024\r\n{HEAD}\r\nlegacy key\r\n"),
            false,
        ),
        (
            "a@big.test",
            format!("From: big@big.test\r\nSubject: 4096\r\n{HEAD}\r\nbig key\r\n"),
            false,
        ),
    ]
}

/// Submits with BDAT so that the content can end without CRLF.
async fn submit_bdat(addr: SocketAddr, from: &str, to: &str, content: &[u8]) -> String {
    let mut s = BufReader::new(TcpStream::connect(addr).await.unwrap());
    let mut lines = Vec::new();
    let read_reply = async |s: &mut BufReader<TcpStream>| {
        let mut all = String::new();
        for _ in 0..50 {
            let mut line = String::new();
            s.read_line(&mut line).await.unwrap();
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                break;
            }
        }
        all
    };
    lines.push(read_reply(&mut s).await);
    for cmd in [
        "EHLO client.test".to_owned(),
        format!("MAIL FROM:<{from}>"),
        format!("RCPT TO:<{to}>"),
    ] {
        s.get_mut()
            .write_all(format!("{cmd}\r\n").as_bytes())
            .await
            .unwrap();
        lines.push(read_reply(&mut s).await);
    }
    assert!(lines.iter().all(|l| l.starts_with('2')), "{lines:?}");
    let cmd = format!("BDAT {} LAST\r\n", content.len());
    s.get_mut()
        .write_all(&[cmd.as_bytes(), content].concat())
        .await
        .unwrap();
    read_reply(&mut s).await
}

/// Relays `messages()` plus one BDAT message without a final CRLF through
/// Tern with `canonicalization`, and returns what the sink received, in
/// submission order.
async fn relay(net: &Net, canonicalization: &str) -> Vec<Vec<u8>> {
    let msgs = messages();
    let n = msgs.len();
    let last = format!(
        "From: news@shop.test\r\nSubject: [{n}] no final CRLF\r\n{HEAD}\r\nno newline at the end"
    );
    deliver(net, config(net, canonicalization), msgs, Some(last)).await
}

/// Submits each (sender, message, 8-bit) through Tern with `cfg` (each
/// message's Subject gets its index, `[i]`), then `bdat` with BDAT, and
/// returns the data the sink received, in submission order.
async fn deliver(
    net: &Net,
    cfg: Config,
    msgs: Vec<(&str, String, bool)>,
    bdat: Option<String>,
) -> Vec<Vec<u8>> {
    let mx = net.sink(10).await;
    let tern = Tern::start(cfg).await;
    for (i, (from, body, eight)) in msgs.iter().enumerate() {
        let body = body.replace("Subject: ", &format!("Subject: [{i}] "));
        let mail = format!(
            "MAIL FROM:<{from}>{}",
            if *eight { " BODY=8BITMIME" } else { "" }
        );
        let r = submit_with(tern.addr, &mail, &["x@alpha.test"], body.as_bytes()).await;
        assert!(r.starts_with("250"), "{r}");
    }
    let n = msgs.len() + usize::from(bdat.is_some());
    if let Some(last) = bdat {
        let r = submit_bdat(tern.addr, "a@shop.test", "x@alpha.test", last.as_bytes()).await;
        assert!(r.starts_with("250"), "{r}");
    }
    let got = mx.wait_received(n, WAIT).await;
    assert_eq!(got.len(), n);
    tern.stop().await;
    mx.stop().await;
    let mut data: Vec<Vec<u8>> = got.into_iter().map(|m| m.data).collect();
    let index = |d: &Vec<u8>| {
        let t = String::from_utf8_lossy(d);
        let i = t.find("Subject: [").unwrap() + 10;
        t[i..].split(']').next().unwrap().parse::<usize>().unwrap()
    };
    data.sort_by_key(index);
    data
}

/// The `d=` of each signature.
fn domains(m: &[u8]) -> Vec<String> {
    signatures(m).into_iter().map(|(d, _)| d).collect()
}

/// Replaces the first `from` after the header section with `to`.
fn tamper_body(m: &[u8], from: &str, to: &str) -> Vec<u8> {
    let t = String::from_utf8_lossy(m).into_owned();
    let split = t.find("\r\n\r\n").unwrap();
    let (head, body) = t.split_at(split);
    assert!(body.contains(from), "{body}");
    format!("{head}{}", body.replacen(from, to, 1)).into_bytes()
}

async fn verify_run(canonicalization: &str) {
    let net = net().await;
    let got = relay(&net, canonicalization).await;
    let expected: Vec<Vec<(&str, &str)>> = {
        let shop = vec![("shop.test", "rsa-sha256"), ("shop.test", "ed25519-sha256")];
        vec![
            shop.clone(),
            shop.clone(),
            shop.clone(),
            shop.clone(),
            shop.clone(),
            vec![("legacy.test", "rsa-sha256")],
            vec![("big.test", "rsa-sha256")],
            shop,
        ]
    };
    for (m, want) in got.iter().zip(&expected) {
        let sigs = signatures(m);
        let sigs: Vec<(&str, &str)> = sigs.iter().map(|(d, a)| (d.as_str(), a.as_str())).collect();
        assert_eq!(&sigs, want, "{}", String::from_utf8_lossy(m));
        let c = format!("c={canonicalization};");
        assert!(
            String::from_utf8_lossy(m).replace(' ', "").contains(&c),
            "{c}"
        );
    }
    assert!(
        got[1].windows(2).any(|w| w == "ü".as_bytes()),
        "the 8-bit body arrived as 8 bits"
    );
    assert!(
        String::from_utf8_lossy(&got[4])
            .ends_with("\r\n\r\n.\r\n..\r\n.leading dot\r\nmiddle\r\n.\r\nend\r\n"),
        "dot-stuffing undone at both ends"
    );
    assert!(
        got[7].ends_with(b"no newline at the end\r\n"),
        "CRLF added at intake, before signing"
    );

    // Tampered copies: a body changed by one word, a header changed.
    let tampered = vec![
        tamper_body(&got[0], "hello", "HELLO"),
        String::from_utf8_lossy(&got[5])
            .replacen("Subject: [5] 1024", "Subject: [5] 2048", 1)
            .into_bytes(),
        tamper_body(&got[1], "Köln", "Koln"),
    ];

    verify_both(net.dns.addr, &got, &tampered).await;
    net.stop().await;
}

/// Every signature of `good` passes and every one of `tampered` fails,
/// with mail-auth and with dkimpy.
async fn verify_both(dns: SocketAddr, good: &[Vec<u8>], tampered: &[Vec<u8>]) {
    for m in good {
        for (d, pass) in mail_auth_verify(dns, m).await {
            assert!(
                pass,
                "mail-auth: {d} fails on {}",
                String::from_utf8_lossy(m)
            );
        }
    }
    for m in tampered {
        let results = mail_auth_verify(dns, m).await;
        assert!(
            !results.is_empty() && results.iter().all(|(_, p)| !p),
            "mail-auth passed a tampered message: {results:?}"
        );
    }
    let all: Vec<Vec<u8>> = good.iter().chain(tampered).cloned().collect();
    if let Some(results) = dkimpy_verify(dns, &all).await {
        let (passed, bad) = results.split_at(good.len());
        for (i, r) in passed.iter().enumerate() {
            assert_eq!(r.len(), signatures(&good[i]).len(), "message {i}");
            assert!(
                r.iter().all(|ok| *ok),
                "dkimpy: message {i} fails: {r:?}\n{}",
                String::from_utf8_lossy(&good[i])
            );
        }
        for (i, r) in bad.iter().enumerate() {
            assert!(
                !r.is_empty() && r.iter().all(|ok| !ok),
                "dkimpy passed tampered message {i}: {r:?}"
            );
        }
    }
}

#[tokio::test]
async fn relaxed_signatures_verify_independently_and_tampering_fails() {
    verify_run("relaxed/relaxed").await;
}

#[tokio::test]
async fn simple_signatures_verify_independently_and_tampering_fails() {
    verify_run("simple/simple").await;
}

#[tokio::test]
async fn mixed_canonicalizations_verify() {
    verify_run("relaxed/simple").await;
}

#[tokio::test]
async fn the_signing_domain_is_the_authors_then_the_senders_then_the_platforms() {
    let net = net().await;
    let mut cfg = config(&net, "relaxed/relaxed");
    cfg.dkim.signing_domain = vec![DomainSource::From, DomainSource::Sender];
    cfg.dkim.platform_domain = Some("platform.test".into());
    let msg = |from: &str| format!("{from}Subject: choice\r\n{HEAD}\r\nbody\r\n");
    let got = deliver(
        &net,
        cfg,
        vec![
            ("a@other.test", msg("From: news@shop.test\r\n"), false),
            (
                "bounce@legacy.test",
                msg("From: news@unknown.test\r\n"),
                false,
            ),
            ("a@nokey.test", msg("From: news@unknown.test\r\n"), false),
            ("", msg(""), false),
        ],
        None,
    )
    .await;
    let want = [
        vec!["shop.test", "shop.test"],
        vec!["legacy.test"],
        vec!["platform.test"],
        vec!["platform.test"],
    ];
    for (m, want) in got.iter().zip(want) {
        assert_eq!(domains(m), want, "{}", String::from_utf8_lossy(m));
        let results = mail_auth_verify(net.dns.addr, m).await;
        assert!(results.iter().all(|(_, ok)| *ok), "{results:?}");
    }
    let log = net.log();
    let dkim: Vec<&str> = log
        .iter()
        .filter(|r| r["type"] == "reception")
        .map(|r| r["dkim"].as_str().unwrap())
        .collect();
    assert_eq!(
        dkim,
        [
            "shop.test/rsa shop.test/ed",
            "legacy.test/old",
            "platform.test/p1",
            "platform.test/p1"
        ]
    );
    net.stop().await;
}

#[tokio::test]
async fn the_platform_can_always_cosign_and_mail_without_a_key_goes_unsigned() {
    let net = net().await;
    let mut cfg = config(&net, "relaxed/relaxed");
    cfg.dkim.platform_domain = Some("platform.test".into());
    cfg.dkim.platform_signature = PlatformSignature::Always;
    let msg = format!("From: news@shop.test\r\nSubject: cosigned\r\n{HEAD}\r\nbody\r\n");
    let got = deliver(&net, cfg, vec![("a@shop.test", msg, false)], None).await;
    assert_eq!(
        domains(&got[0]),
        ["shop.test", "shop.test", "platform.test"]
    );
    let results = mail_auth_verify(net.dns.addr, &got[0]).await;
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(|(_, ok)| *ok), "{results:?}");

    // Without a platform domain, a From domain without a key: unsigned.
    let cfg = config(&net, "relaxed/relaxed");
    let msg = format!("From: news@unknown.test\r\nSubject: unsigned\r\n{HEAD}\r\nbody\r\n");
    let got = deliver(&net, cfg, vec![("a@shop.test", msg, false)], None).await;
    assert!(
        domains(&got[0]).is_empty(),
        "{}",
        String::from_utf8_lossy(&got[0])
    );
    let log = net.log();
    let last = log.iter().rfind(|r| r["type"] == "reception").unwrap();
    assert_eq!(last["dkim"], "none", "the log says it went unsigned");
    net.stop().await;
}

#[tokio::test]
async fn a_utf8_from_domain_is_signed_under_its_a_label() {
    // The key is configured under the U-label; DNS knows only A-labels.
    let k = key("bücher.test", "idn", "ed25519.pem");
    let mut published = k.clone();
    published.domain = "xn--bcher-kva.test".into();
    let net = Net::new(&format!("{ZONE}\n{}", zone_records(&[published]))).await;
    let mut cfg = net.config();
    cfg.dkim.keys = vec![k];
    let body = format!(
        "From: Bücher <news@BÜCHER.test>\r\nSubject: idn\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n{HEAD}\r\nhallo\r\n"
    );
    let got = deliver(&net, cfg, vec![("a@shop.test", body, true)], None).await;
    assert_eq!(domains(&got[0]), ["xn--bcher-kva.test"]);
    let results = mail_auth_verify(net.dns.addr, &got[0]).await;
    assert!(
        !results.is_empty() && results.iter().all(|(_, ok)| *ok),
        "{results:?}"
    );
    if let Some(r) = dkimpy_verify(net.dns.addr, &got).await {
        assert_eq!(r, vec![vec![true]], "dkimpy verifies the A-label signature");
    }
    net.stop().await;
}
