//! The HTTP injection API end to end: `POST /v1/messages` on the admin
//! listener, rendered (variables, MJML), built as MIME, DKIM-signed and
//! queued like SMTP mail, delivered by Tern to a sink on the test's
//! network; the errors (a field named, a line and column), idempotency
//! keys (also across a restart), stored templates and their previews,
//! and the door's 429/503.

mod common;

use std::time::Duration;

use common::admin::{admin, call, wait_up};
use common::dkim::{key, mail_auth_verify, zone_records};
use common::http::{Answer, request};
use common::net::{Net, Tern, WAIT, ZONE, records};
use serde_json::json;
use tern::config::AdminConfig;

async fn post(
    a: &AdminConfig,
    path: &'static str,
    extra: &[(&'static str, &str)],
    body: serde_json::Value,
) -> Answer {
    let a = a.clone();
    let extra: Vec<(&'static str, String)> =
        extra.iter().map(|(k, v)| (*k, v.to_string())).collect();
    call(move || {
        let e: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        request(&a, "POST", path, &e, body.to_string().as_bytes())
    })
    .await
}

async fn put(a: &AdminConfig, path: &'static str, body: serde_json::Value) -> Answer {
    let a = a.clone();
    call(move || request(&a, "PUT", path, &[], body.to_string().as_bytes())).await
}

async fn get(a: &AdminConfig, path: &'static str) -> Answer {
    let a = a.clone();
    call(move || request(&a, "GET", path, &[], b"")).await
}

const MJML: &str = "<mjml><mj-body><mj-section><mj-column>\
    <mj-text>Hello {{ name }}, your order {{ order }} ships {{ when }}.</mj-text>\
    <mj-button href=\"https://shop.test/o/{{ order }}\">Track it</mj-button>\
    </mj-column></mj-section></mj-body></mjml>";

async fn setup() -> (Net, AdminConfig, tern::config::Config) {
    let keys = [key("shop.test", "api", "ed25519.pem")];
    let net = Net::new(&format!("{ZONE}{}", zone_records(&keys))).await;
    let a = admin(&net);
    let mut cfg = net.config();
    cfg.admin = a.clone();
    cfg.dkim.keys = keys.to_vec();
    cfg.tenants.push(tern::config::TenantConfig {
        name: "shop".into(),
        ..Default::default()
    });
    (net, a, cfg)
}

#[tokio::test]
async fn an_mjml_message_to_two_recipients_is_rendered_signed_and_delivered() {
    let (net, a, cfg) = setup().await;
    let mx = net.sink(10).await;
    let tern = Tern::start(cfg).await;
    wait_up(&a).await;
    let req = json!({
        "from": "Shop <orders@shop.test>",
        "subject": "Order {{ order }} for {{ name }}",
        "mjml": MJML,
        "headers": {"X-Campaign": "autumn {{ order }}"},
        "variables": {"when": "tomorrow"},
        "recipients": [
            {"email": "ann@alpha.test", "name": "Ann", "variables": {"order": "A-1"}},
            {"email": "bob@alpha.test", "variables": {"order": "B-2", "name": "Bob <the builder>"}},
            "not-an-address"
        ],
        "attachments": [{"content_type": "text/plain", "filename": "reçu.txt", "content": "cmVjZWlwdA=="}],
        "tenant": "shop",
        "priority": "high",
        "custom_id": "order-batch-7",
        "metadata": {"campaign": "autumn"}
    });
    let r = post(&a, "/v1/messages", &[], req).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let body = r.json();
    assert_eq!(
        (body["queued"].as_u64(), body["rejected"].as_u64()),
        (Some(2), Some(1)),
        "{body}"
    );
    let rows = body["results"].as_array().unwrap();
    assert!(rows[0]["queue_id"].is_string() && rows[0]["message_id"].is_string());
    assert_eq!(rows[2]["error"]["field"], "recipients[2]");

    let got = mx.wait_received(2, WAIT).await;
    assert_eq!(got.len(), 2);
    for m in &got {
        let text = String::from_utf8_lossy(&m.data).into_owned();
        let (who, order) = match m.rcpts[0].as_str() {
            "ann@alpha.test" => ("Ann", "A-1"),
            _ => ("Bob &lt;the builder&gt;", "B-2"),
        };
        assert_eq!(m.from, "orders@shop.test");
        assert!(
            text.contains(&format!("Subject: Order {order} for")),
            "{text}"
        );
        assert!(
            text.contains(&format!("X-Campaign: autumn {order}")),
            "{text}"
        );
        assert!(
            text.contains("with HTTP id"),
            "the Received header says HTTP: {text}"
        );
        assert!(
            text.contains("multipart/alternative") && text.contains("text/plain"),
            "{text}"
        );
        let decoded = decode_qp(&text);
        assert!(
            decoded.contains(&format!("Hello {who}, your order {order} ships tomorrow.")),
            "{decoded}"
        );
        assert!(
            decoded.contains(&format!("https://shop.test/o/{order}")),
            "{decoded}"
        );
        assert!(
            text.contains("filename*=") || text.contains("=?utf-8?"),
            "RFC 2231 file name: {text}"
        );
        let dkim = mail_auth_verify(net.dns.addr, &m.data).await;
        assert_eq!(dkim, [("shop.test".to_owned(), true)], "{text}");
    }
    tern.stop().await;
    let log = net.log();
    assert_eq!(log.iter().filter(|r| r["type"] == "reception").count(), 2);
    assert_eq!(records(&log, "delivery", "ann@alpha.test").len(), 1);
    mx.stop().await;
    net.stop().await;
}

/// Quoted-printable soft breaks and escapes undone (enough for the test).
fn decode_qp(s: &str) -> String {
    let joined = s.replace("=\r\n", "");
    let mut out = Vec::new();
    let b = joined.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'='
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn bad_requests_name_the_field_and_queue_nothing() {
    let (net, a, cfg) = setup().await;
    let tern = Tern::start(cfg).await;
    wait_up(&a).await;
    let a2 = a.clone();
    let r = call(move || {
        request(
            &a2,
            "POST",
            "/v1/messages",
            &[],
            b"{\"from\": \"a@shop.test\", \"recipients\": [1]}",
        )
    })
    .await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.json()["errors"][0]["field"]
            .as_str()
            .unwrap()
            .starts_with("recipients[0]"),
        "{}",
        r.json()
    );
    let a2 = a.clone();
    let r = call(move || {
        request(
            &a2,
            "POST",
            "/v1/messages",
            &[],
            b"{\"from\": \"a@shop.test\",\n \"recipients\": [\"x@alpha.test\"], \"colour\": 1}",
        )
    })
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errors"][0]["line"], 2, "{}", r.json());
    let r = post(
        &a,
        "/v1/messages",
        &[],
        json!({
            "from": "nobody", "recipients": [], "html": "<p>\n{{ name }</p>", "pool": "nope",
            "tenant": "ghost", "priority": "urgent", "metadata": [1],
            "headers": {"Subject": "x"},
            "attachments": [{"content_type": "pdf", "filename": "a.pdf", "content": "***"}]
        }),
    )
    .await;
    assert_eq!(r.status, 422);
    let fields: Vec<String> = r.json()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect();
    for f in [
        "from",
        "recipients",
        "pool",
        "tenant",
        "priority",
        "metadata",
        "headers.Subject",
        "attachments[0].content_type",
        "attachments[0].content",
    ] {
        assert!(fields.iter().any(|x| x == f), "{f} missing from {fields:?}");
    }
    let r = post(
        &a,
        "/v1/messages",
        &[],
        json!({
            "from": "a@shop.test", "recipients": ["x@alpha.test"], "html": "<p>\n  {{ name }</p>"
        }),
    )
    .await;
    assert_eq!(r.status, 422);
    let e = &r.json()["errors"][0];
    assert_eq!(
        (e["field"].as_str(), e["line"].as_u64()),
        (Some("html"), Some(2)),
        "{e}"
    );
    tern.stop().await;
    assert!(net.log().is_empty(), "nothing was queued");
    net.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_sends_once_even_across_a_restart() {
    let (net, a, cfg) = setup().await;
    let mx = net.sink(10).await;
    let tern = Tern::start(cfg.clone()).await;
    wait_up(&a).await;
    let req = json!({"from": "a@shop.test", "recipients": ["k@alpha.test"], "text": "hello"});
    let first = post(
        &a,
        "/v1/messages",
        &[("Idempotency-Key", "order-7")],
        req.clone(),
    )
    .await;
    assert_eq!(first.status, 202);
    let again = post(
        &a,
        "/v1/messages",
        &[("Idempotency-Key", "order-7")],
        req.clone(),
    )
    .await;
    assert_eq!(
        (again.status, again.header("idempotent-replayed")),
        (202, Some("true"))
    );
    assert_eq!(again.json(), first.json(), "the first answer");
    let other = json!({"from": "a@shop.test", "recipients": ["k@alpha.test"], "text": "changed"});
    let r = post(&a, "/v1/messages", &[("Idempotency-Key", "order-7")], other).await;
    assert_eq!(r.status, 422, "the same key with another body");
    assert_eq!(mx.wait_received(1, WAIT).await.len(), 1);
    tern.stop().await;
    let tern = Tern::start(cfg).await;
    wait_up(&a).await;
    let after = post(&a, "/v1/messages", &[("Idempotency-Key", "order-7")], req).await;
    assert_eq!(after.json(), first.json(), "remembered across a restart");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(mx.received().len(), 1, "sent once");
    tern.stop().await;
    mx.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn templates_are_versioned_kept_and_previewed() {
    let (net, a, cfg) = setup().await;
    let mx = net.sink(10).await;
    let tern = Tern::start(cfg.clone()).await;
    wait_up(&a).await;
    let v1 = json!({"subject": "Welcome {{ name }}", "mjml": MJML, "variables": {"when": "soon", "order": "-"}});
    let r = put(&a, "/v1/templates/welcome", v1).await;
    assert_eq!(
        (r.status, r.json()["version"].as_u64()),
        (201, Some(1)),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let v2 = json!({"subject": "Hi {{ name }}", "html": "<p>v2 for {{ name }}</p>"});
    assert_eq!(
        put(&a, "/v1/templates/welcome", v2).await.json()["version"],
        2
    );
    let bad = put(
        &a,
        "/v1/templates/broken",
        json!({"mjml": "<mjml>\n<mj-body>\n<mj-section foo=></mj-section></mj-body></mjml>"}),
    )
    .await;
    assert_eq!(bad.status, 422);
    assert_eq!(bad.json()["errors"][0]["line"], 3, "{}", bad.json());
    let p = post(
        &a,
        "/v1/templates/welcome/preview",
        &[],
        json!({"version": 1, "variables": {"name": "Ann", "order": "A-1"}}),
    )
    .await;
    let p = p.json();
    assert_eq!(p["subject"], "Welcome Ann");
    assert!(
        p["text"]
            .as_str()
            .unwrap()
            .contains("Hello Ann, your order A-1 ships soon."),
        "{p}"
    );
    let req = json!({"from": "a@shop.test", "template": "welcome", "template_version": 1,
        "recipients": [{"email": "t@alpha.test", "name": "Tess", "variables": {"order": "T-9"}}]});
    assert_eq!(post(&a, "/v1/messages", &[], req).await.status, 202);
    let got = mx.wait_received(1, WAIT).await;
    let text = decode_qp(&String::from_utf8_lossy(&got[0].data));
    assert!(
        text.contains("Subject: Welcome Tess") && text.contains("your order T-9 ships soon"),
        "{text}"
    );
    tern.stop().await;
    let tern = Tern::start(cfg).await;
    wait_up(&a).await;
    let t = get(&a, "/v1/templates/welcome").await.json();
    assert_eq!(
        t["versions"].as_array().unwrap().len(),
        2,
        "kept across a restart: {t}"
    );
    assert_eq!(get(&a, "/v1/templates").await.json(), json!(["welcome"]));
    let missing = post(
        &a,
        "/v1/messages",
        &[],
        json!({"from": "a@shop.test", "template": "nope", "recipients": ["x@alpha.test"]}),
    )
    .await;
    assert_eq!(
        (
            missing.status,
            missing.json()["errors"][0]["field"].as_str()
        ),
        (422, Some("template"))
    );
    tern.stop().await;
    mx.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after_and_queues_nothing() {
    let (net, a, mut cfg) = setup().await;
    let mx = net.sink_with(10, common::admin::refusing()).await;
    cfg.queue.max_messages = 1;
    let tern = Tern::start(cfg).await;
    wait_up(&a).await;
    let req = json!({"from": "a@shop.test", "recipients": ["q@alpha.test"], "text": "x"});
    assert_eq!(post(&a, "/v1/messages", &[], req.clone()).await.status, 202);
    let r = post(&a, "/v1/messages", &[], req).await;
    assert_eq!(
        (r.status, r.header("retry-after")),
        (429, Some("10")),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    tern.stop().await;
    assert_eq!(net.spool().len(), 1, "only the first");
    mx.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn tern_template_pushes_shows_and_previews() {
    use common::admin::{cli_file, tern_cli};
    let (net, a, cfg) = setup().await;
    let tern = Tern::start(cfg).await;
    wait_up(&a).await;
    let file = cli_file(&net, &a);
    let leak = |p: std::path::PathBuf| -> &'static str {
        Box::leak(p.to_string_lossy().into_owned().into_boxed_str())
    };
    let good = net.dir.path().join("welcome.mjml");
    std::fs::write(&good, MJML).unwrap();
    let bad = net.dir.path().join("bad.mjml");
    std::fs::write(
        &bad,
        "<mjml>\n<mj-body>\n<mj-section foo=></mj-section></mj-body></mjml>",
    )
    .unwrap();
    let (ok, out) = tern_cli(
        vec![
            "template",
            "push",
            "welcome",
            leak(good),
            "--subject",
            "Welcome {{ name }}",
            "--vars",
            "{\"when\": \"soon\"}",
        ],
        file.clone(),
    )
    .await;
    assert!(ok && out.contains("welcome: version 1"), "{out}");
    let (ok, out) = tern_cli(vec!["template", "push", "broken", leak(bad)], file.clone()).await;
    assert!(!ok && out.contains("mjml (line 3"), "{out}");
    let (ok, out) = tern_cli(vec!["template", "show"], file.clone()).await;
    assert!(ok && out.trim() == "welcome", "{out}");
    let (ok, out) = tern_cli(vec!["template", "show", "welcome"], file.clone()).await;
    assert!(ok && out.contains("mjml"), "{out}");
    let (ok, out) = tern_cli(
        vec![
            "template",
            "preview",
            "welcome",
            "--vars",
            "{\"name\": \"Ann\", \"order\": \"A-1\"}",
        ],
        file.clone(),
    )
    .await;
    assert!(
        ok && out.contains("Subject: Welcome Ann")
            && out.contains("Hello Ann, your order A-1 ships soon."),
        "{out}"
    );
    let (ok, out) = tern_cli(vec!["template", "preview", "welcome"], file).await;
    assert!(
        !ok && out.contains("undefined"),
        "a missing variable is an error: {out}"
    );
    tern.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn the_api_can_have_a_listener_and_a_token_of_its_own() {
    let (net, a, mut cfg) = setup().await;
    let mx = net.sink(10).await;
    let probe = std::net::TcpListener::bind((net.ip(81), 0)).unwrap();
    let address = probe.local_addr().unwrap();
    drop(probe);
    cfg.api.address = Some(address);
    cfg.api.token = Some("an-application-token-1234".into());
    let tern = Tern::start(cfg).await;
    wait_up(&a).await;
    let api = AdminConfig {
        enabled: true,
        address,
        token: Some("an-application-token-1234".into()),
        ..AdminConfig::default()
    };
    let req = json!({"from": "a@shop.test", "recipients": ["own@alpha.test"], "text": "hi"});
    assert_eq!(
        post(&api, "/v1/messages", &[], req.clone()).await.status,
        202
    );
    let admin_token = AdminConfig {
        token: a.token.clone(),
        ..api.clone()
    };
    assert_eq!(
        post(&admin_token, "/v1/messages", &[], req).await.status,
        401,
        "its own token only"
    );
    assert_eq!(
        get(&api, "/v1/queue/summary").await.status,
        404,
        "no admin endpoint there"
    );
    assert_eq!(mx.wait_received(1, WAIT).await.len(), 1);
    tern.stop().await;
    mx.stop().await;
    net.stop().await;
}
