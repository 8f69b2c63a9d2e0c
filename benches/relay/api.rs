//! `--api`: injection through `POST /v1/messages` against SMTP injection
//! of the same rendered size. A 10 KB MJML template (stored once with
//! `PUT /v1/templates/bench`) goes to `--messages` recipients in requests
//! of 100, each recipient with its own variables (so its MJML renders on
//! its own), from 4 HTTP clients on keep-alive connections; per DKIM
//! variant, Tern's CPU per message and the messages/s accepted and
//! delivered; then the SMTP run with messages of the size the sinks saw,
//! then the API run again (the first run on a cold page cache costs more).
//! Last, the MJML render cost per message measured in this process
//! (the same compiled template; a fresh render per recipient, and a
//! render whose MJML is the same as the last one's).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::tern::{Daemon, Setup, Signing};
use crate::{Args, internet, procstat, relay, wait_delivered};

/// Recipients per request.
const PER_REQUEST: u64 = 100;
/// HTTP clients.
const CLIENTS: usize = 4;

/// The benchmark's template: about 10 KB of MJML with the recipient's
/// name and order in its text and links.
pub fn template() -> String {
    let mut m = String::from(
        "<mjml><mj-head><mj-title>Your order</mj-title><mj-attributes><mj-all font-family=\"Helvetica, Arial\" /><mj-text font-size=\"14px\" line-height=\"20px\" /></mj-attributes>\
         <mj-style>.footer a { color: #888888; }</mj-style></mj-head><mj-body background-color=\"#f4f4f4\">\
         <mj-section><mj-column><mj-image src=\"https://shop.example/logo.png\" width=\"120px\" alt=\"Shop\" /></mj-column></mj-section>\
         <mj-section background-color=\"#ffffff\"><mj-column><mj-text font-size=\"20px\">Hello {{ name }},</mj-text>\
         <mj-text>Thank you for your order {{ order }}. Here is what happens next.</mj-text></mj-column></mj-section>",
    );
    let mut i = 0;
    while m.len() < 9_600 {
        i += 1;
        m.push_str(&format!(
            "<mj-section background-color=\"#ffffff\"><mj-column width=\"60%\"><mj-text>Item {i} of order {{{{ order }}}}: \
             a carefully packed product, with its care instructions and our two-year guarantee.</mj-text></mj-column>\
             <mj-column width=\"40%\"><mj-button href=\"https://shop.example/o/{{{{ order }}}}/{i}\" background-color=\"#2a7ae2\">See item {i}</mj-button></mj-column></mj-section>"
        ));
    }
    m.push_str("<mj-section><mj-column><mj-text css-class=\"footer\">Shop, 1 Example Street. <a href=\"https://shop.example/u\">Unsubscribe</a></mj-text></mj-column></mj-section></mj-body></mjml>");
    m
}

/// One HTTP/1.1 exchange on a keep-alive connection: status and body.
fn exchange(s: &mut BufReader<TcpStream>, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let w = s.get_mut();
    w.write_all(&[head.as_bytes(), body].concat()).unwrap();
    let mut line = String::new();
    s.read_line(&mut line).unwrap();
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut len = 0;
    loop {
        line.clear();
        s.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut out = vec![0; len];
    s.read_exact(&mut out).unwrap();
    (status, out)
}

fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    let s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    BufReader::new(s)
}

/// A request for recipients `first..first + n` (domains as the SMTP load
/// spreads them), each with its `X-Bench-Id`.
fn request(first: u64, n: u64, domains: u64) -> Vec<u8> {
    let recipients: Vec<serde_json::Value> = (first..first + n)
        .map(|k| {
            serde_json::json!({"email": format!("u{k}.0@d{}.bench", k % domains),
                "variables": {"name": format!("Customer {k}"), "order": format!("A-{k}"), "id": k}})
        })
        .collect();
    serde_json::json!({
        "from": "Shop <app@shop.example>",
        "template": "bench",
        "headers": {"X-Bench-Id": "{{ id }}"},
        "recipients": recipients,
    })
    .to_string()
    .into_bytes()
}

/// What one API run measured.
struct ApiRun {
    signing: Signing,
    accepted: u64,
    inject: Duration,
    end_to_end: Duration,
    cpu: f64,
    size: usize,
}

fn api_run(a: &Args, net: &(SocketAddr, u16, Arc<internet::Tally>), signing: Signing) -> ApiRun {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        dir: dir.path(),
        dns: net.0,
        sink_port: net.1,
        signing,
        log_level: "warn",
    };
    let admin: SocketAddr = {
        let p = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        p.local_addr().unwrap()
    };
    let daemon = Daemon::start_with(&setup, |c| {
        c.admin.enabled = true;
        c.admin.address = admin;
    });
    let mut s = connect(admin);
    let t =
        serde_json::json!({"subject": "Your order {{ order }}", "mjml": template()}).to_string();
    let (status, body) = exchange(&mut s, "PUT", "/v1/templates/bench", t.as_bytes());
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let requests = a.messages.div_ceil(PER_REQUEST);
    let next = Arc::new(AtomicU64::new(0));
    let cpu0 = procstat::process_cpu(daemon.pid());
    let start = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (next, domains, messages) = (next.clone(), a.domains as u64, a.messages);
            std::thread::spawn(move || {
                let mut s = connect(admin);
                let mut accepted = 0;
                loop {
                    let r = next.fetch_add(1, Ordering::Relaxed);
                    if r >= requests {
                        return accepted;
                    }
                    let first = r * PER_REQUEST;
                    let n = PER_REQUEST.min(messages - first);
                    let (status, body) =
                        exchange(&mut s, "POST", "/v1/messages", &request(first, n, domains));
                    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    accepted += v["queued"].as_u64().unwrap_or(0);
                }
            })
        })
        .collect();
    let accepted: u64 = clients.into_iter().map(|c| c.join().unwrap()).sum();
    let inject = start.elapsed();
    wait_delivered(&net.2, accepted, Some(&daemon));
    let end_to_end = start.elapsed();
    let cpu = procstat::process_cpu(daemon.pid()) - cpu0;
    let size = net.2.captured.lock().unwrap().first().map_or(0, Vec::len);
    daemon.stop();
    ApiRun {
        signing,
        accepted,
        inject,
        end_to_end,
        cpu,
        size,
    }
}

/// MJML render cost per message, in this process: (fresh, same MJML).
fn render_cost() -> (f64, f64) {
    use tern::inject::render::{Compiled, Parts};
    let parts = Parts {
        subject: Some("Your order {{ order }}".into()),
        mjml: Some(template()),
        ..Parts::default()
    };
    let c = Compiled::new(parts, "").unwrap();
    let vars = |k: u64| {
        [
            ("name", format!("Customer {k}")),
            ("order", format!("A-{k}")),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), serde_json::Value::from(b)))
        .collect()
    };
    let n = 500;
    let t = Instant::now();
    for k in 0..n {
        c.render(&vars(k), &mut None).unwrap();
    }
    let fresh = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let same = vars(0);
    let mut memo = None;
    let t = Instant::now();
    for _ in 0..n {
        c.render(&same, &mut memo).unwrap();
    }
    (fresh, t.elapsed().as_secs_f64() * 1e6 / n as f64)
}

/// The API runs, the SMTP runs of the same size, the render cost.
pub fn run(a: &Args) {
    let net = crate::accepting(a, 1);
    let mut rows = Vec::new();
    for signing in a.dkim.clone() {
        // A first API run finds the rendered size; then SMTP and the API
        // again, so that neither is always the first on a cold page cache.
        net.2.reset();
        let probe = api_run(a, &net, signing);
        net.2.reset();
        let smtp_args = Args {
            size: probe.size,
            ..a.clone()
        };
        let smtp = relay(&smtp_args, &net, signing, None);
        net.2.reset();
        let api = api_run(a, &net, signing);
        rows.push((probe, api, smtp));
    }
    println!(
        "\ninjection: {} messages, 10 KB MJML template, {PER_REQUEST} recipients per request, {CLIENTS} HTTP clients; SMTP: {} clients, same size",
        a.messages, a.clients
    );
    println!(
        "{:<8} {:>9} {:>20} {:>20} {:>22} {:>14} {:>14}",
        "dkim",
        "size",
        "API acc/s (1st, 2nd)",
        "API e2e/s",
        "API CPU/msg",
        "SMTP acc/s",
        "SMTP CPU/msg"
    );
    for (probe, api, smtp) in &rows {
        let per = |r: &ApiRun| {
            let n = r.accepted.max(1) as f64;
            (
                n / r.inject.as_secs_f64(),
                n / r.end_to_end.as_secs_f64(),
                r.cpu * 1e6 / n,
            )
        };
        let (p, q) = (per(probe), per(api));
        let m = smtp.accepted.max(1) as f64;
        println!(
            "{:<8} {:>7} B {:>9.0}, {:>8.0} {:>9.0}, {:>8.0} {:>8.0}, {:>7.0} us {:>14.0} {:>11.0} us",
            format!("{:?}", api.signing).to_lowercase(),
            api.size,
            p.0,
            q.0,
            p.1,
            q.1,
            p.2,
            q.2,
            m / smtp.inject.as_secs_f64(),
            smtp.mta_cpu.unwrap_or(0.0) * 1e6 / m,
        );
    }
    let (fresh, same) = render_cost();
    println!(
        "MJML render (this process, one core): {fresh:.0} us per message when its variables differ, {same:.0} us when its MJML is the last one's"
    );
}
