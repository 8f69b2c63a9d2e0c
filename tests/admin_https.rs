//! The admin API over HTTPS: the daemon serves it with the configured
//! certificate, the CLI's client trusts that certificate (it reads the
//! same config) and nothing else, plain HTTP gets nowhere, and a
//! non-loopback admin address in plaintext is refused at config load.

mod common;

use common::admin::{admin, call, wait_up};
use common::net::{Net, Tern, ZONE};

#[tokio::test]
async fn the_admin_api_speaks_https_and_the_cli_trusts_its_certificate() {
    let net = Net::new(ZONE).await;
    let mut a = admin(&net);
    let cert = common::test_cert(net.dir.path());
    a.tls_certificate = Some(cert.cert_path.clone());
    a.tls_key = Some(cert.key_path.clone());
    let mut cfg = net.config();
    cfg.admin = a.clone();
    let tern = Tern::start(cfg).await;
    wait_up(&a).await;
    let a2 = a.clone();
    let health =
        call(move || tern::admin::client::get::<tern::admin::types::Health>(&a2, "/v1/health"))
            .await;
    assert!(health.is_ok(), "{health:?}");
    // Plain HTTP to the HTTPS port gets no answer.
    let plain = tern::config::AdminConfig {
        tls_certificate: None,
        tls_key: None,
        ..a.clone()
    };
    let r =
        call(move || tern::admin::client::get::<tern::admin::types::Health>(&plain, "/v1/health"))
            .await;
    assert!(r.is_err(), "plain HTTP is not served");
    // A client that trusts another certificate refuses the server's.
    let elsewhere = tempfile::tempdir().unwrap();
    let other = common::test_cert(elsewhere.path()); // a fresh key and certificate
    let mut wrong = a.clone();
    wrong.tls_certificate = Some(other.cert_path);
    let r =
        call(move || tern::admin::client::get::<tern::admin::types::Health>(&wrong, "/v1/health"))
            .await;
    assert!(r.is_err(), "a certificate it does not trust: {r:?}");
    tern.stop().await;
    net.stop().await;
}

#[test]
fn a_public_admin_address_in_plaintext_is_refused() {
    let text = "[admin]\naddress = \"192.0.2.1:8025\"\ntoken = \"a-token-of-sixteen-chars\"\n";
    let e = tern::config::parse(std::path::Path::new("t.toml"), text)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("admin.tls_certificate") && e.contains("plaintext"),
        "{e}"
    );
    let ok = format!("{text}allow_plaintext = true\n");
    assert!(tern::config::parse(std::path::Path::new("t.toml"), &ok).is_ok());
}
