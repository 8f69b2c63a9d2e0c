//! Tenants and their domains: a tenant that declares its domains sends
//! only as them (or as its `sender_mismatch` says), no tenant's key ever
//! signs another tenant's mail, and a domain's key signs its subdomains
//! when `[dkim] subdomains` is on. Real SMTP to Tern, real DNS for the
//! keys, signatures verified by mail-auth at the sink.

mod common;

use common::dkim::{dkimpy_verify, key, mail_auth_verify, signatures, zone_records};
use common::net::{Net, Tern, WAIT, ZONE, submit};
use tern::config::{SenderMismatch, TenantConfig};

struct Case {
    policy: SenderMismatch,
    listener_tenant: Option<&'static str>,
    subdomains: bool,
    from: &'static str,
}

/// Sends one message from `from` as the case says; the reply and the
/// signatures' domains of what the sink got (if it got it).
async fn run(c: Case) -> (String, Option<Vec<String>>, bool) {
    let keys = [
        key("a.test", "s1", "ed25519.pem"),
        key("b.test", "s1", "rsa2048.pkcs8.pem"),
        key("p.test", "s1", "ed25519.pem"),
    ];
    let net = Net::new(&format!("{ZONE}{}", zone_records(&keys))).await;
    let mx = net.sink(10).await;
    let mut cfg = net.config();
    cfg.dkim.keys = keys.to_vec();
    cfg.dkim.platform_domain = Some("p.test".into());
    cfg.dkim.subdomains = c.subdomains;
    for (name, domains) in [("A", vec!["a.test", "*.a.test"]), ("B", vec!["b.test"])] {
        cfg.tenants.push(TenantConfig {
            name: name.into(),
            domains: domains.into_iter().map(str::to_owned).collect(),
            sender_mismatch: c.policy,
            ..TenantConfig::default()
        });
    }
    cfg.listeners[0].tenant = c.listener_tenant.map(str::to_owned);
    let tern = Tern::start(cfg).await;
    let body = format!(
        "From: Boss <ceo@{}>\r\nSubject: pay now\r\n\r\nurgent\r\n",
        c.from
    );
    let sender = format!("ceo@{}", c.from);
    let reply = submit(tern.addr, &sender, &["victim@alpha.test"], body.as_bytes()).await;
    let (sigs, verified) = if reply.starts_with("250") {
        let got = mx.wait_received(1, WAIT).await;
        let data = &got[0].data;
        let results = mail_auth_verify(net.dns.addr, data).await;
        let mut verified = !results.is_empty() && results.iter().all(|(_, ok)| *ok);
        // dkimpy too, where Python can load it (pip, as tests/dkim.rs does).
        if let Some(py) = dkimpy_verify(net.dns.addr, std::slice::from_ref(data)).await {
            verified &= py[0].iter().all(|ok| *ok) && !py[0].is_empty();
        }
        (
            Some(signatures(data).into_iter().map(|(d, _)| d).collect()),
            verified,
        )
    } else {
        (None, false)
    };
    tern.stop().await;
    mx.stop().await;
    net.stop().await;
    (reply, sigs, verified)
}

fn case(policy: SenderMismatch, from: &'static str) -> Case {
    Case {
        policy,
        listener_tenant: Some("A"),
        subdomains: false,
        from,
    }
}

#[tokio::test]
async fn a_tenant_never_gets_another_tenants_signature() {
    let (reply, sigs, _) = run(case(SenderMismatch::Reject, "b.test")).await;
    assert!(
        reply.starts_with("550 5.7.1") && reply.contains("b.test") && reply.contains("tenant A"),
        "{reply}"
    );
    assert!(sigs.is_none(), "nothing queued");
    let (reply, sigs, ok) = run(case(SenderMismatch::Platform, "b.test")).await;
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(sigs.unwrap(), ["p.test"], "the platform's signature only");
    assert!(ok);
    let (_, sigs, _) = run(case(SenderMismatch::Allow, "b.test")).await;
    assert_eq!(sigs.unwrap(), ["p.test"], "allowed, but never with B's key");
    let (_, sigs, ok) = run(case(SenderMismatch::Reject, "a.test")).await;
    assert_eq!(sigs.unwrap(), ["a.test"], "its own domain");
    assert!(ok);
    // Mail of no tenant does not get a tenant's key either.
    let mut no_tenant = case(SenderMismatch::Reject, "b.test");
    no_tenant.listener_tenant = None;
    let (reply, sigs, _) = run(no_tenant).await;
    assert!(
        reply.starts_with("250"),
        "no tenant, no domains to check: {reply}"
    );
    assert_eq!(sigs.unwrap(), ["p.test"]);
}

#[tokio::test]
async fn a_domains_key_signs_its_subdomains_when_asked() {
    let mut c = case(SenderMismatch::Reject, "news.a.test");
    let (reply, sigs, _) = run(c).await;
    assert!(
        reply.starts_with("250"),
        "a tenant's subdomain is its own: {reply}"
    );
    assert_eq!(
        sigs.unwrap(),
        ["p.test"],
        "no key of its own without subdomains"
    );
    c = case(SenderMismatch::Reject, "news.a.test");
    c.subdomains = true;
    let (_, sigs, ok) = run(c).await;
    assert_eq!(sigs.unwrap(), ["a.test"], "the organisational domain's key");
    assert!(ok, "and it verifies");
}

#[tokio::test]
async fn a_tenant_can_hold_its_envelope_senders_to_its_domains() {
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    let mut cfg = net.config();
    cfg.tenants.push(TenantConfig {
        name: "A".into(),
        domains: vec!["a.test".into(), "*.a.test".into()],
        restrict_sender: true,
        ..TenantConfig::default()
    });
    cfg.listeners[0].tenant = Some("A".into());
    let tern = Tern::start(cfg).await;
    let body = b"From: <news@a.test>\r\nSubject: s\r\n\r\nx\r\n";
    let ok = submit(tern.addr, "bounces@mail.a.test", &["x@alpha.test"], body).await;
    assert!(ok.starts_with("250"), "{ok}");
    let refused = submit(tern.addr, "someone@elsewhere.test", &["y@alpha.test"], body).await;
    assert!(
        refused.starts_with("550 5.7.1") && refused.contains("elsewhere.test"),
        "{refused}"
    );
    let null = submit(tern.addr, "", &["z@alpha.test"], body).await;
    assert!(null.starts_with("250"), "<> passes: {null}");
    assert_eq!(mx.wait_received(2, WAIT).await.len(), 2);
    tern.stop().await;
    mx.stop().await;
    net.stop().await;
}
