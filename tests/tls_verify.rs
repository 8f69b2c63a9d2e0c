//! `tls = "verify"`: STARTTLS with the MX's certificate checked against
//! the trusted roots (here a test CA given as `tls_ca_file`) and the MX
//! host name. A valid certificate delivers; a certificate for another
//! name, one from an unknown CA, or no STARTTLS at all defers the mail,
//! never plaintext.

mod common;

use std::time::Duration;

use common::ca::Ca;
use common::net::{Net, Tern, WAIT, ZONE, records, submit};
use common::sink::{SinkOptions, StartTls};

/// What the MX presents.
enum Cert {
    /// The test CA's, for mx.alpha.test.
    ValidForMx,
    /// The test CA's, for another name.
    OtherName,
    /// Self-signed (an unknown CA).
    SelfSigned,
    /// No STARTTLS offered.
    NoStartTls,
}

async fn run(cert: Cert, expect_delivery: bool) -> Vec<serde_json::Value> {
    let ca = Ca::new();
    let net = Net::new(ZONE).await;
    let starttls = match cert {
        Cert::ValidForMx => Some(StartTls::Working(ca.acceptor(&["mx.alpha.test"]))),
        Cert::OtherName => Some(StartTls::Working(ca.acceptor(&["other.test"]))),
        Cert::SelfSigned => Some(StartTls::Working(common::sink::acceptor())),
        Cert::NoStartTls => None,
    };
    let mx = net
        .sink_with(
            10,
            SinkOptions {
                starttls,
                ..SinkOptions::default()
            },
        )
        .await;
    let ca_file = net.dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let mut cfg = net.config();
    cfg.delivery.tls = tern::config::TlsPolicy::Verify;
    cfg.delivery.tls_ca_file = Some(ca_file);
    let tern = Tern::start(cfg).await;
    let r = submit(
        tern.addr,
        "app@shop.test",
        &["v@alpha.test"],
        b"Subject: v\r\n\r\nx\r\n",
    )
    .await;
    assert!(r.starts_with("250"), "{r}");
    if expect_delivery {
        let got = mx.wait_received(1, WAIT).await;
        assert!(got[0].tls, "delivered under TLS");
    } else {
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            mx.received().is_empty(),
            "never in plaintext, never to an unverified host"
        );
    }
    tern.stop().await;
    mx.stop().await;
    let log = net.log();
    net.stop().await;
    log
}

#[tokio::test]
async fn a_certificate_valid_for_the_mx_delivers() {
    let log = run(Cert::ValidForMx, true).await;
    let d = records(&log, "delivery", "v@alpha.test");
    assert_eq!(d.len(), 1);
    assert_eq!(
        d[0]["tls"], "verified",
        "the log says the certificate was checked"
    );
}

#[tokio::test]
async fn another_name_an_unknown_ca_or_no_starttls_defers_and_never_goes_in_plaintext() {
    for (case, cert) in [
        ("a name other than the MX's", Cert::OtherName),
        ("an unknown CA", Cert::SelfSigned),
        ("no STARTTLS", Cert::NoStartTls),
    ] {
        let log = run(cert, false).await;
        let d = records(&log, "transient_failure", "v@alpha.test");
        assert_eq!(d.len(), 1, "{case}: {log:#?}");
    }
}
