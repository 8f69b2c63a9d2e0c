//! `--proxy socks5|dante|haproxy`: the relay run without DKIM twice on one
//! fake internet, first with the source bound locally (127.0.1.20), then
//! with it leaving through a real proxy process on loopback
//! (`microsocks -b 127.0.1.20`, Dante's `danted` with that external
//! address, or `haproxy` with `usesrc clientip`; the last two need root).
//! Dante works in several processes: its CPU is that of the first only. Reports
//! what the hop adds to Tern's CPU per message (the proxy's own CPU apart)
//! and the end-to-end rate of each.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::tern::Signing;
use crate::{Args, Run, procstat, relay};

/// Starts the proxy; returns it and its URL.
fn start(kind: &str, dir: &std::path::Path) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = match kind {
        "socks5" => {
            let mut c = Command::new("microsocks");
            c.args([
                "-i",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-b",
                "127.0.1.20",
            ]);
            c
        }
        "dante" => {
            let cfg = dir.join("danted.conf");
            let text = format!(
                "logoutput: stderr\ninternal: 127.0.0.1 port = {port}\nexternal: 127.0.1.20\n\
                 socksmethod: none\nclientmethod: none\nuser.privileged: root\nuser.unprivileged: nobody\n\
                 client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}\n\
                 socks pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 command: connect }}\n"
            );
            std::fs::write(&cfg, text).unwrap();
            let mut c = Command::new("danted");
            c.arg("-f").arg(cfg);
            c
        }
        "haproxy" => {
            let cfg = dir.join("haproxy.cfg");
            let text = format!(
                "global\n    maxconn 4000\n\
                 defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n\
                 frontend out\n    bind 127.0.0.1:{port} accept-proxy\n    default_backend mx\n\
                 backend mx\n    source 0.0.0.0 usesrc clientip\n    server mx 0.0.0.0\n"
            );
            std::fs::write(&cfg, text).unwrap();
            let mut c = Command::new("haproxy");
            c.arg("-db").arg("-f").arg(cfg);
            c
        }
        other => panic!("--proxy: socks5 (microsocks), dante or haproxy, not {other:?}"),
    };
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start the {kind} proxy ({e}): apt-get install microsocks dante-server haproxy")
        });
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let scheme = if kind == "haproxy" {
                "haproxy"
            } else {
                "socks5"
            };
            return (child, format!("{scheme}://127.0.0.1:{port}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the {kind} proxy did not listen within 10 s");
}

/// CPU seconds of every proxy process now (Dante forks workers).
fn proxy_cpu() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            matches!(comm.trim(), "microsocks" | "danted" | "haproxy")
        })
        .map(procstat::process_cpu)
        .sum()
}

/// The two runs and the difference.
pub fn run(a: &Args, kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let net = crate::accepting(a, 0);
    use std::sync::atomic::Ordering::Relaxed;
    net.2.reset();
    let direct = relay(a, &net, Signing::Off, None);
    let direct_conns = net.2.connections.load(Relaxed);
    let (mut child, url) = start(kind, dir.path());
    let proxy_cpu0 = proxy_cpu();
    net.2.reset();
    let via = relay(a, &net, Signing::Off, Some(&url));
    let proxy_cpu = proxy_cpu() - proxy_cpu0;
    let via_conns = net.2.connections.load(Relaxed);
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "\nrelay through a proxy: {} messages of {} B, {} clients, {} domains on {} MX hosts, no DKIM",
        a.messages, a.size, a.clients, a.domains, a.hosts
    );
    println!(
        "{:<16} {:>12} {:>12} {:>9} {:>14} {:>12}",
        "source", "end-to-end/s", "Tern CPU/msg", "p99", "proxy CPU/msg", "connections"
    );
    let per = |r: &Run, secs: f64| secs * 1e6 / r.accepted.max(1) as f64;
    let row = |name: &str, r: &Run, proxy: Option<f64>, conns: u64| {
        let mut lat = r.latencies.clone();
        lat.sort();
        let p99 = lat.get(lat.len() * 99 / 100).copied().unwrap_or_default();
        println!(
            "{name:<16} {:>12.0} {:>9.1} us {:>9.2?} {:>14} {conns:>12}",
            r.accepted as f64 / r.end_to_end.as_secs_f64(),
            per(r, r.mta_cpu.unwrap_or(0.0)),
            p99,
            proxy.map_or("-".into(), |c| format!("{:.1} us", per(r, c))),
        );
    };
    row("direct", &direct, None, direct_conns);
    row(&format!("via {kind}"), &via, Some(proxy_cpu), via_conns);
    println!(
        "the hop adds {:.1} us of Tern CPU per message (goal: under 10 us)",
        per(&via, via.mta_cpu.unwrap_or(0.0)) - per(&direct, direct.mta_cpu.unwrap_or(0.0))
    );
}
