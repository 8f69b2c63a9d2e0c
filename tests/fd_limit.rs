//! Out of file descriptors: `tern run` as a child process whose open-file
//! limit (soft and hard) is set low before it starts. More clients than it
//! has descriptors for get `421` rather than waiting in the backlog, and
//! once they leave, the door and the spool work again: nothing stays
//! broken.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A free port of 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `tern run` with at most `files` open files.
fn start(dir: &std::path::Path, port: u16, files: u64) -> Child {
    let path = dir.join("tern.toml");
    let text = format!(
        "[server]\nhostname = \"mta.test\"\n[log]\nlevel = \"warn\"\ndeliveries = \"{}\"\n[[listener]]\naddress = \"127.0.0.1:{port}\"\nmax_connections = 1000\n[queue]\npath = \"{}\"\nsegment_size = \"64KiB\"\nmin_free_space = \"0B\"\n[dns]\nnameservers = [\"127.0.0.1:1\"]\nattempts = 1\ntimeout = \"1s\"\n[admin]\nenabled = false\n",
        dir.join("deliveries.jsonl").display(),
        dir.join("spool").display()
    );
    std::fs::write(&path, text).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tern"));
    cmd.args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap());
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(move || {
            let limit = rustix::process::Rlimit {
                current: Some(files),
                maximum: Some(files),
            };
            rustix::process::setrlimit(rustix::process::Resource::Nofile, limit)
                .map_err(std::io::Error::from)
        });
    }
    cmd.spawn().expect("start tern")
}

/// Connects and reads the first line (empty if none within 10 s).
fn greeting(addr: SocketAddr) -> (Option<TcpStream>, String) {
    let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return (None, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut line = String::new();
    let _ = BufReader::new(s.try_clone().unwrap()).read_line(&mut line);
    (Some(s), line)
}

/// One message over SMTP; the final reply.
fn submit(addr: SocketAddr) -> String {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut reply = || {
        let mut all = String::new();
        for _ in 0..20 {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        }
        all
    };
    assert!(reply().starts_with("220"));
    for cmd in [
        "EHLO c.test",
        "MAIL FROM:<a@shop.test>",
        "RCPT TO:<b@x.test>",
        "DATA",
    ] {
        w.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        let r = reply();
        assert!(r.starts_with('2') || r.starts_with("354"), "{cmd}: {r}");
    }
    w.write_all(b"Subject: s\r\n\r\nx\r\n.\r\n").unwrap();
    reply()
}

#[test]
fn clients_beyond_the_descriptors_get_421_and_nothing_stays_broken() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut child = start(dir.path(), port, 64);
    let up = (0..500).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        greeting(addr).1.starts_with("220")
    });
    assert!(
        up,
        "tern did not start: {}",
        std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default()
    );

    let mut open = Vec::new();
    let (mut served, mut refused) = (0, 0);
    for _ in 0..100 {
        let (s, line) = greeting(addr);
        match &line {
            l if l.starts_with("220") => served += 1,
            l if l.starts_with("421") => refused += 1,
            l => panic!("a client got {l:?} (nothing within 10 s?)"),
        }
        open.extend(s);
    }
    assert!(
        refused > 0,
        "{served} served, none refused with 64 descriptors"
    );
    assert!(served > 10, "{served} served");
    drop(open);

    // The clients gone, the door and the spool work again.
    let again = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        greeting(addr).1.starts_with("220")
    });
    assert!(again, "the door never opened again");
    let r = submit(addr);
    assert!(r.starts_with("250"), "{r}");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}
