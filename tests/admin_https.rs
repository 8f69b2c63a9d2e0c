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

#[tokio::test]
async fn a_read_token_reads_and_a_browser_logs_in_to_the_status_page() {
    use common::http::request;
    let net = Net::new(ZONE).await;
    let mut a = admin(&net);
    a.read_token = Some("a-dashboard-read-token".into());
    let mut cfg = net.config();
    cfg.admin = a.clone();
    let tern = Tern::start(cfg).await;
    wait_up(&a).await;
    let reader = tern::config::AdminConfig {
        token: Some("a-dashboard-read-token".into()),
        ..a.clone()
    };
    let r = reader.clone();
    let get = call(move || request(&r, "GET", "/v1/queue/summary", &[], b"")).await;
    assert_eq!(get.status, 200);
    let r = reader.clone();
    let purge =
        call(move || request(&r, "POST", "/v1/purge", &[], b"{\"domain\":\"x.test\"}")).await;
    assert_eq!(purge.status, 403, "a read-only token cannot purge");
    // A browser: the status page sends it to /login; the form gives a
    // cookie that opens the page, read-only.
    let anon = tern::config::AdminConfig {
        token: None,
        ..a.clone()
    };
    let (an, an2, an3) = (anon.clone(), anon.clone(), anon.clone());
    let page = call(move || request(&an, "GET", "/status", &[], b"")).await;
    assert_eq!(
        (page.status, page.header("location")),
        (303, Some("/login"))
    );
    let login = call(move || {
        request(
            &an2,
            "POST",
            "/login",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            b"token=a-dashboard-read-token",
        )
    })
    .await;
    let cookie = login.header("set-cookie").unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    let s2 = session.clone();
    let page = call(move || request(&an3, "GET", "/status", &[("Cookie", &s2)], b"")).await;
    assert_eq!(page.status, 200, "{}", String::from_utf8_lossy(&page.body));
    let an4 = anon.clone();
    let purge =
        call(move || request(&an4, "POST", "/v1/purge", &[("Cookie", &session)], b"{}")).await;
    assert_eq!(purge.status, 403, "a session only reads");
    tern.stop().await;
    net.stop().await;
}
