//! MTA-STS (RFC 8461) and TLS reports (RFC 8460), end to end: the
//! `_mta-sts` record in the test's DNS, the policy served over HTTPS by a
//! policy host with a certificate of the test's CA, MX sinks presenting
//! certificates of that CA (or not, or no STARTTLS at all), and the daily
//! report mailed to the `rua` of the `_smtp._tls` record.
//!
//! - `enforce`: delivered only over TLS verified for an MX host the policy
//!   names; a wrong name, an unknown CA, a stripped STARTTLS or an MX the
//!   policy does not name defers the mail, never plaintext.
//! - A cached `enforce` policy holds across a restart when the record
//!   changes and the new policy cannot be fetched.
//! - A reload that turns MTA-STS on holds the next mail to the policy.
//! - `testing`: delivered anyway; the failure is in the TLS report.

mod common;

use std::io::Read;
use std::time::Duration;

use common::admin::call;
use common::ca::Ca;
use common::dns::TestDns;
use common::http::request;
use common::net::{Net, Tern, WAIT, records, submit};
use common::sink::{Sink, SinkOptions, StartTls};
use common::sts::PolicyHost;
use tern::config::{AdminConfig, Config};

const ZONE: &str = r#"
alpha IN MX 10 mx.alpha
mx.alpha IN A {net}.10
_mta-sts.alpha IN TXT "v=STSv1; id={id}"
mta-sts.alpha IN A {net}.30
_smtp._tls.alpha IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@reports.test"
plain IN MX 10 mx.alpha
reports IN MX 10 mx.reports
mx.reports IN A {net}.11
"#;

fn policy(mode: &str, mx: &str) -> String {
    format!("version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: 86400\r\n")
}

/// What the MX presents.
#[derive(Clone, Copy, Debug)]
enum Mx {
    /// A certificate of the test CA for mx.alpha.test.
    Valid,
    /// The test CA's, for another name.
    OtherName,
    /// Self-signed: an unknown CA.
    UnknownCa,
    /// No STARTTLS (stripped).
    NoStartTls,
}

struct Lab {
    net: Net,
    ca: Ca,
    host: PolicyHost,
}

impl Lab {
    async fn new(policy: &str) -> Self {
        let net = Net::new(&ZONE.replace("{id}", "1")).await;
        let ca = Ca::new();
        let addr = std::net::SocketAddr::new(net.ip(30), net.port);
        let host = PolicyHost::start(addr, ca.acceptor(&["mta-sts.alpha.test"]), policy).await;
        Self { net, ca, host }
    }

    async fn mx(&self, mx: Mx) -> Sink {
        let starttls = match mx {
            Mx::Valid => Some(StartTls::Working(self.ca.acceptor(&["mx.alpha.test"]))),
            Mx::OtherName => Some(StartTls::Working(self.ca.acceptor(&["other.test"]))),
            Mx::UnknownCa => Some(StartTls::Working(common::sink::acceptor())),
            Mx::NoStartTls => None,
        };
        let opts = SinkOptions {
            starttls,
            ..SinkOptions::default()
        };
        self.net.sink_with(10, opts).await
    }

    fn config(&self) -> (Config, AdminConfig) {
        let mut cfg = self.net.config();
        cfg.delivery.tls_ca_file = Some(self.ca.file(self.net.dir.path()));
        cfg.tls_policy.https_port = self.net.port;
        let admin = common::admin::admin(&self.net);
        cfg.admin = admin.clone();
        (cfg, admin)
    }
}

async fn send(tern: &Tern, to: &str) {
    let r = submit(
        tern.addr,
        "app@shop.test",
        &[to],
        b"Subject: s\r\n\r\nx\r\n",
    )
    .await;
    assert!(r.starts_with("250"), "{r}");
}

/// `rcpt` was deferred once, because the MTA-STS policy names no MX it
/// could go to.
fn deferred_by_the_policy(log: &[serde_json::Value], rcpt: &str) {
    let d = records(log, "transient_failure", rcpt);
    assert_eq!(d.len(), 1, "{log:#?}");
    let reply = d[0]["reply"].as_str().unwrap();
    assert!(
        reply.contains("4.7.5") && reply.contains("MTA-STS"),
        "{reply}"
    );
}

#[tokio::test]
async fn enforce_delivers_over_verified_tls_to_a_named_mx_and_says_so() {
    let lab = Lab::new(&policy("enforce", "mx.alpha.test")).await;
    let mx = lab.mx(Mx::Valid).await;
    let (cfg, admin) = lab.config();
    let tern = Tern::start(cfg).await;
    send(&tern, "v@alpha.test").await;
    send(&tern, "p@plain.test").await;
    let got = mx.wait_received(2, WAIT).await;
    assert!(got.iter().all(|r| r.tls));
    let file = common::admin::cli_file(&lab.net, &admin);
    let view = call(move || request(&admin, "GET", "/v1/tls/alpha.test", &[], b"")).await;
    let view = view.json();
    let (ok, out) = common::admin::tern_cli(vec!["tls", "show", "alpha.test"], file).await;
    assert!(
        ok && out.contains("tls policy  mta-sts") && out.contains("mode enforce"),
        "{out}"
    );
    assert_eq!(view["tls_policy"], "mta-sts", "{view}");
    assert_eq!(view["mta_sts"]["mode"], "enforce");
    assert_eq!(view["hosts"], serde_json::json!(["mx.alpha.test"]));
    tern.stop().await;
    mx.stop().await;
    assert_eq!(
        lab.host.hits(),
        1,
        "the policy is fetched once, then cached"
    );
    let log = lab.net.log();
    let d = records(&log, "delivery", "v@alpha.test");
    assert_eq!(d.len(), 1, "{log:#?}");
    assert_eq!(
        (d[0]["tls_policy"].as_str(), d[0]["tls"].as_str()),
        (Some("mta-sts"), Some("verified"))
    );
    let p = records(&log, "delivery", "p@plain.test");
    assert_eq!(
        p[0]["tls_policy"], "opportunistic",
        "a domain without a policy"
    );
    lab.net.stop().await;
}

#[tokio::test]
async fn enforce_defers_on_a_wrong_name_an_unknown_ca_or_stripped_starttls() {
    for case in [Mx::OtherName, Mx::UnknownCa, Mx::NoStartTls] {
        let lab = Lab::new(&policy("enforce", "mx.alpha.test")).await;
        let mx = lab.mx(case).await;
        let (cfg, _) = lab.config();
        let tern = Tern::start(cfg).await;
        send(&tern, "v@alpha.test").await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        tern.stop().await;
        assert!(
            mx.received().is_empty(),
            "{case:?}: never in plaintext, never unverified"
        );
        mx.stop().await;
        let log = lab.net.log();
        let d = records(&log, "transient_failure", "v@alpha.test");
        assert_eq!(d.len(), 1, "{case:?}: {log:#?}");
        assert_eq!(d[0]["tls_policy"], "mta-sts", "{case:?}");
        lab.net.stop().await;
    }
}

#[tokio::test]
async fn enforce_never_sends_to_an_mx_the_policy_does_not_name() {
    let lab = Lab::new(&policy("enforce", "*.elsewhere.test")).await;
    let mx = lab.mx(Mx::Valid).await;
    let (cfg, _) = lab.config();
    let tern = Tern::start(cfg).await;
    send(&tern, "v@alpha.test").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    tern.stop().await;
    assert_eq!(
        mx.connections(),
        0,
        "no connection to an MX outside the policy"
    );
    mx.stop().await;
    deferred_by_the_policy(&lab.net.log(), "v@alpha.test");
    lab.net.stop().await;
}

#[tokio::test]
async fn a_cached_enforce_policy_holds_across_a_restart_when_the_new_one_cannot_be_fetched() {
    let lab = Lab::new(&policy("enforce", "mx.alpha.test")).await;
    let mx = lab.mx(Mx::Valid).await;
    let (cfg, _) = lab.config();
    let tern = Tern::start(cfg.clone()).await;
    send(&tern, "v@alpha.test").await;
    mx.wait_received(1, WAIT).await;
    tern.stop().await;
    mx.stop().await;
    // The record now names a new policy, which fails to come; the MX now
    // offers no STARTTLS (an attacker in the path).
    let text = format!(
        "$TTL 300\n@ IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300\n@ IN NS ns.test.\n{}\n",
        ZONE.replace("{id}", "2").replace("{net}", &lab.net.prefix)
    );
    let dns = TestDns::start(lab.net.ip(54), &[("test.", &text)]).await;
    lab.host.set(500, "");
    let stripped = lab.mx(Mx::NoStartTls).await;
    let mut cfg = cfg;
    cfg.dns.nameservers = vec![dns.addr.to_string().try_into().unwrap()];
    let tern = Tern::start(cfg).await;
    send(&tern, "w@alpha.test").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    tern.stop().await;
    assert!(
        stripped.received().is_empty(),
        "the cached enforce policy still holds"
    );
    assert!(lab.host.hits() >= 2, "the new policy was asked for");
    stripped.stop().await;
    dns.stop().await;
    let log = lab.net.log();
    let d = records(&log, "transient_failure", "w@alpha.test");
    assert_eq!(d.len(), 1, "{log:#?}");
    assert_eq!(d[0]["tls_policy"], "mta-sts");
    lab.net.stop().await;
}

#[tokio::test]
async fn a_reload_turning_mta_sts_on_holds_the_next_mail_to_the_policy() {
    // The policy names no MX Tern may use: once it is looked up, mail for
    // alpha.test waits.
    let lab = Lab::new(&policy("enforce", "*.elsewhere.test")).await;
    let mx = lab.mx(Mx::Valid).await;
    let (mut cfg, admin) = lab.config();
    cfg.tls_policy.mta_sts = false;
    let file = lab.net.dir.path().join("tern.toml");
    let tern = common::admin::start_from_file(cfg.clone(), &file).await;
    send(&tern, "before@alpha.test").await;
    assert_eq!(
        mx.wait_received(1, WAIT).await.len(),
        1,
        "no policy looked up"
    );
    assert_eq!(lab.host.hits(), 0);

    cfg.tls_policy.mta_sts = true;
    let done = common::admin::reload_with(&admin, &file, &cfg)
        .await
        .unwrap();
    assert!(
        !done
            .needs_restart
            .iter()
            .any(|s| s.starts_with("tls_policy")),
        "{done:?}"
    );
    assert!(done.applied.iter().any(|s| s == "tls policy"), "{done:?}");
    send(&tern, "after@alpha.test").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    tern.stop().await;
    assert_eq!(mx.received().len(), 1, "the policy holds the new mail back");
    assert!(
        lab.host.hits() >= 1,
        "the policy was fetched after the reload"
    );
    mx.stop().await;
    deferred_by_the_policy(&lab.net.log(), "after@alpha.test");
    lab.net.stop().await;
}

#[tokio::test]
async fn testing_delivers_anyway_and_the_failure_is_reported_by_mail() {
    let lab = Lab::new(&policy("testing", "mx.alpha.test")).await;
    let mx = lab.mx(Mx::OtherName).await;
    let reports = lab.net.sink(11).await;
    let (cfg, admin) = lab.config();
    let tern = Tern::start(cfg).await;
    send(&tern, "v@alpha.test").await;
    let got = mx.wait_received(1, WAIT).await;
    assert!(got[0].tls, "encrypted, though not verified");
    let today = tern::clock::date(tern::clock::day_number(std::time::SystemTime::now()));
    let path = format!("/v1/tls/reports?day={today}");
    let answer = call(move || request(&admin, "POST", &path, &[], b"")).await;
    assert_eq!(answer.status, 200);
    let answer = answer.json();
    assert_eq!(answer["reports"][0]["domain"], "alpha.test", "{answer}");
    assert_eq!(answer["reports"][0]["result"], "sent", "{answer}");
    let mail = reports.wait_received(1, WAIT).await;
    tern.stop().await;
    mx.stop().await;
    reports.stop().await;
    assert_eq!(mail[0].rcpts, ["tlsrpt@reports.test"]);
    let report = report_of(&mail[0].data);
    let p = &report["policies"][0];
    assert_eq!(p["policy"]["policy-type"], "sts");
    assert_eq!(p["policy"]["policy-domain"], "alpha.test");
    assert_eq!(p["policy"]["mx-host"], serde_json::json!(["mx.alpha.test"]));
    assert_eq!(p["summary"]["total-successful-session-count"], 0);
    assert_eq!(p["summary"]["total-failure-session-count"], 1);
    let f = &p["failure-details"][0];
    assert_eq!(f["result-type"], "certificate-host-mismatch", "{report}");
    assert_eq!(f["receiving-mx-hostname"], "mx.alpha.test");
    assert_eq!(f["failed-session-count"], 1);
    let log = lab.net.log();
    let d = records(&log, "delivery", "v@alpha.test");
    assert_eq!(
        (d[0]["tls_policy"].as_str(), d[0]["tls"].as_str()),
        (Some("mta-sts-testing"), Some("tls"))
    );
    lab.net.stop().await;
}

/// The JSON of the `application/tlsrpt+gzip` part of a report message.
fn report_of(data: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(data);
    assert!(text.contains("multipart/report"), "{text}");
    assert!(text.contains("TLS-Report-Domain: alpha.test"), "{text}");
    let at = text
        .find("application/tlsrpt+gzip")
        .expect("the report part");
    let part = &text[at..];
    let body_start = part.find("\r\n\r\n").unwrap() + 4;
    let body: String = part[body_start..]
        .lines()
        .take_while(|l| !l.starts_with("--") && !l.is_empty())
        .collect();
    use base64::Engine;
    let gz = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .unwrap();
    let mut json = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut json)
        .unwrap();
    serde_json::from_str(&json).unwrap()
}
