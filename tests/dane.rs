//! DANE (RFC 7672) end to end: a DNSSEC-signed `test.` zone served by
//! hickory-server (its key is Tern's trust anchor), TLSA records for the
//! MX hosts, MX sinks presenting certificates of a test CA. Every row of
//! the decision table in the README's "TLS policy":
//!
//! - secure MX + matching DANE-EE or DANE-TA records: delivered, verified;
//! - a certificate that matches no record, or STARTTLS stripped: deferred,
//!   never plaintext;
//! - bogus TLSA (signatures that do not hold) or SERVFAIL: deferred;
//! - a secure host without TLSA: the domain's other policy;
//! - DANE wins over MTA-STS;
//! - name servers that strip signatures: DANE off ("insecure"), mail flows.

mod common;

use std::time::Duration;

use common::ca::Ca;
use common::dns::TestDns;
use common::net::{Net, Tern, WAIT, records, submit};
use common::sink::{Sink, SinkOptions, StartTls};
use common::sts::PolicyHost;
use tern::config::Config;
use tokio_rustls::TlsAcceptor;

const ZONE: &str = r#"$TTL 300
@ IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300
@ IN NS ns.test.
ns IN A {net}.53
alpha IN MX 10 mx.alpha
mx.alpha IN A {net}.10
_{port}._tcp.mx.alpha IN TLSA 3 1 1 {alpha}
ta IN MX 10 mx.ta
mx.ta IN A {net}.11
_{port}._tcp.mx.ta IN TLSA 2 0 1 {ca}
notlsa IN MX 10 mx.notlsa
mx.notlsa IN A {net}.12
both IN MX 10 mx.alpha
_mta-sts.both IN TXT "v=STSv1; id=1"
mta-sts.both IN A {net}.30
mism IN MX 10 mx.mism
mx.mism IN A {net}.13
_{port}._tcp.mx.mism IN TLSA 3 1 1 {other}
strip IN MX 10 mx.strip
mx.strip IN A {net}.14
_{port}._tcp.mx.strip IN TLSA 3 1 1 {other}
bogus IN MX 10 mx.bogus
mx.bogus IN A {net}.15
_{port}._tcp.mx.bogus IN TLSA 3 1 1 {alpha}
flaky IN MX 10 mx.flaky
mx.flaky IN A {net}.16
_{port}._tcp.mx.flaky IN TLSA 3 1 1 {alpha}
"#;

fn sha256_hex(data: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn sink_opts(acceptor: Option<TlsAcceptor>) -> SinkOptions {
    SinkOptions {
        starttls: acceptor.map(StartTls::Working),
        ..SinkOptions::default()
    }
}

struct Lab {
    net: Net,
    dns: TestDns,
    _policy: PolicyHost,
    sinks: Vec<(&'static str, Sink)>,
    cfg: Config,
}

/// The zone above, signed (`signed`) or served as is (a resolver that
/// strips signatures), and a sink per MX host.
async fn lab(signed: bool) -> Lab {
    let net = Net::new("").await;
    let ca = Ca::new();
    let alpha = ca.issue(&["mx.alpha.test"], false);
    let ta = ca.issue(&["mx.ta.test"], true);
    let zone = ZONE
        .replace("{net}", &net.prefix)
        .replace("{port}", &net.port.to_string())
        .replace("{alpha}", &sha256_hex(&alpha.spki))
        .replace("{ca}", &sha256_hex(&ca.der))
        .replace("{other}", &sha256_hex(b"some other key"));
    let tamper = format!("_{}._tcp.mx.bogus 300 IN TLSA 3 1 1 00\n", net.port);
    let (dns, anchor) = TestDns::start_signed(net.ip(54), "test.", &zone, &tamper).await;
    let dns = match signed {
        true => dns,
        false => {
            dns.stop().await;
            TestDns::start(net.ip(55), &[("test.", &zone)]).await
        }
    };
    dns.servfail(&format!("_{}._tcp.mx.flaky.test", net.port), true);
    let mut sinks = Vec::new();
    for (name, last, acceptor) in [
        ("alpha", 10, Some(alpha.acceptor)),
        ("ta", 11, Some(ta.acceptor)),
        ("notlsa", 12, Some(ca.acceptor(&["mx.notlsa.test"]))),
        ("mism", 13, Some(ca.acceptor(&["mx.mism.test"]))),
        ("strip", 14, None),
        ("bogus", 15, Some(ca.acceptor(&["mx.bogus.test"]))),
        ("flaky", 16, Some(ca.acceptor(&["mx.flaky.test"]))),
    ] {
        sinks.push((name, net.sink_with(last, sink_opts(acceptor)).await));
    }
    // both.test's MTA-STS policy names another MX: DANE must win.
    let policy = "version: STSv1\r\nmode: enforce\r\nmx: mx.elsewhere.test\r\nmax_age: 86400\r\n";
    let at = std::net::SocketAddr::new(net.ip(30), net.port);
    let _policy = PolicyHost::start(at, ca.acceptor(&["mta-sts.both.test"]), policy).await;
    let anchor_file = net.dir.path().join("anchors.txt");
    std::fs::write(&anchor_file, anchor).unwrap();
    let mut cfg = net.config();
    cfg.dns.nameservers = vec![dns.addr.to_string().try_into().unwrap()];
    cfg.dns.trust_anchor = Some(anchor_file);
    cfg.tls_policy.https_port = net.port;
    cfg.delivery.tls_ca_file = Some(ca.file(net.dir.path()));
    Lab {
        net,
        dns,
        _policy,
        sinks,
        cfg,
    }
}

impl Lab {
    fn sink(&self, name: &str) -> &Sink {
        &self.sinks.iter().find(|(n, _)| *n == name).unwrap().1
    }

    async fn stop(self) -> Vec<serde_json::Value> {
        for (_, s) in self.sinks {
            s.stop().await;
        }
        self.dns.stop().await;
        let log = self.net.log();
        self.net.stop().await;
        log
    }
}

const DOMAINS: [&str; 8] = [
    "alpha", "ta", "notlsa", "both", "mism", "strip", "bogus", "flaky",
];

async fn send_all(tern: &Tern) {
    for d in DOMAINS {
        let to = format!("u@{d}.test");
        let r = submit(
            tern.addr,
            "app@shop.test",
            &[&to],
            b"Subject: d\r\n\r\nx\r\n",
        )
        .await;
        assert!(r.starts_with("250"), "{r}");
    }
}

/// The one record of `kind` for u@`domain`.test.
fn record<'a>(log: &'a [serde_json::Value], kind: &str, domain: &str) -> &'a serde_json::Value {
    let r = records(log, kind, &format!("u@{domain}.test"));
    assert_eq!(r.len(), 1, "{kind} for {domain}: {log:#?}");
    r[0]
}

#[tokio::test]
async fn every_row_of_the_dane_decision_table() {
    let lab = lab(true).await;
    let tern = Tern::start(lab.cfg.clone()).await;
    send_all(&tern).await;
    // alpha and both go to mx.alpha; ta and notlsa to theirs.
    lab.sink("alpha").wait_received(2, WAIT).await;
    lab.sink("ta").wait_received(1, WAIT).await;
    lab.sink("notlsa").wait_received(1, WAIT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    tern.stop().await;
    for never in ["mism", "strip", "bogus", "flaky"] {
        assert!(
            lab.sink(never).received().is_empty(),
            "{never}: nothing sent"
        );
    }
    let log = lab.stop().await;
    for (domain, policy, tls) in [
        ("alpha", "dane", "verified"),
        ("ta", "dane", "verified"),
        ("both", "dane", "verified"),
        ("notlsa", "opportunistic", "verified"),
    ] {
        let d = record(&log, "delivery", domain);
        assert_eq!(d["tls_policy"], policy, "{domain}: {d}");
        assert_eq!(d["tls"], tls, "{domain}: {d}");
    }
    for domain in ["mism", "strip"] {
        let d = record(&log, "transient_failure", domain);
        assert_eq!(d["tls_policy"], "dane", "{domain}: {d}");
    }
    for domain in ["bogus", "flaky"] {
        let d = record(&log, "transient_failure", domain);
        let reply = d["reply"].as_str().unwrap();
        assert!(
            reply.contains("4.7.5") && reply.contains("TLSA"),
            "{domain}: {reply}"
        );
    }
}

#[tokio::test]
async fn name_servers_that_strip_signatures_cost_dane_not_mail() {
    let lab = lab(false).await;
    let tern = Tern::start(lab.cfg.clone()).await;
    send_all(&tern).await;
    lab.sink("mism").wait_received(1, WAIT).await;
    lab.sink("bogus").wait_received(1, WAIT).await;
    tern.stop().await;
    let log = lab.stop().await;
    for domain in ["alpha", "mism", "bogus"] {
        let d = record(&log, "delivery", domain);
        assert_eq!(d["tls_policy"], "opportunistic", "{domain}: {d}");
    }
}
