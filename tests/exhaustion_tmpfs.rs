//! A real full disk: the spool on a small tmpfs that the test mounts
//! (root only; skipped, saying why, otherwise). Mail is accepted while the
//! receiver refuses every connection and retries run, until the door says
//! 4xx; then the receiver comes up, with no space freed by hand: every
//! accepted message is delivered (none more than twice), the spool drains
//! and the door opens again.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::net::{Net, Tern, ZONE, until};
use common::sink::{Sink, SinkOptions};
use tern::config::values::{ByteSize, Duration as Span};

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts `size` bytes at a fresh directory, or says why it cannot.
    fn mount(size: u64) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?.keep();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        match out.status.success() {
            true => Ok(Self(dir)),
            false => {
                let _ = std::fs::remove_dir(&dir);
                Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
            }
        }
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Submits one 20 KB message; its reply.
async fn submit_one(tern: &Tern, i: usize) -> String {
    let line = format!("{}\r\n", "x".repeat(78));
    let body = format!("Subject: {i}\r\n\r\n{}", line.repeat(250));
    let to = format!("r{i}@alpha.test");
    common::net::submit(tern.addr, "app@shop.test", &[&to], body.as_bytes()).await
}

/// A 6 MB tmpfs, or `None` (and why, printed) when it cannot be mounted.
fn small_disk() -> Option<Tmpfs> {
    match Tmpfs::mount(6 << 20) {
        Ok(fs) => Some(fs),
        Err(why) => {
            println!("skipped: cannot mount a tmpfs for the spool ({why}); this test needs root");
            None
        }
    }
}

/// Tern's config for a spool on `fs`: a 1 MB reserve, small segments,
/// retries every second or two, no dead-site pause.
fn config(net: &Net, fs: &Tmpfs) -> tern::config::Config {
    let mut cfg = net.config();
    cfg.queue.path = fs.path().join("spool");
    cfg.queue.min_free_space = ByteSize(1 << 20);
    cfg.queue.segment_size = ByteSize(256 << 10);
    cfg.delivery.retry_first = Span::from_secs(1);
    cfg.delivery.retry_max = Span::from_secs(2);
    cfg.delivery.dead_site_failures = 1_000_000;
    cfg
}

/// Submits messages until the door says 4xx (never 5xx); the accepted.
async fn fill(tern: &Tern) -> Vec<usize> {
    let mut accepted = Vec::new();
    for i in 0..1000 {
        let r = submit_one(tern, i).await;
        match r.starts_with("250") {
            true => accepted.push(i),
            false => {
                assert!(r.starts_with('4'), "never a 5xx: {r}");
                break;
            }
        }
    }
    assert!(accepted.len() > 50, "only {} accepted", accepted.len());
    println!("{} messages of 20 KB filled the 6 MB spool", accepted.len());
    accepted
}

/// Waits until every accepted message arrived at `up`, none more than
/// twice, then until the door takes mail again.
async fn all_delivered_and_open(tern: &Tern, up: &Sink, accepted: &[usize]) {
    let all = || up.received().len() >= accepted.len();
    let n = || up.received().len();
    assert!(
        until(Duration::from_secs(120), all).await,
        "{} of {} delivered",
        n(),
        accepted.len()
    );
    let got = up.received();
    for i in accepted {
        let n = got
            .iter()
            .filter(|m| m.rcpts[0] == format!("r{i}@alpha.test"))
            .count();
        assert!((1..=2).contains(&n), "r{i} arrived {n} times");
    }
    let open = async {
        for _ in 0..600 {
            if submit_one(tern, 9999).await.starts_with("250") {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(open.await, "the door opens again");
}

#[tokio::test]
async fn a_full_disk_drains_by_itself_once_the_receiver_answers() {
    let Some(fs) = small_disk() else { return };
    let net = Net::new(ZONE).await;
    let down = net.sink_with(10, common::admin::refusing()).await;
    let tern = Tern::start(config(&net, &fs)).await;
    // Filled while every attempt is refused and retried.
    let accepted = fill(&tern).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // retries run
    assert!(down.connections() > accepted.len(), "retried while full");

    // The receiver comes up; nothing is freed by hand.
    let addr = down.addr;
    down.stop().await;
    let up = Sink::start_with(addr, SinkOptions::default()).await;
    all_delivered_and_open(&tern, &up, &accepted).await;
    tern.stop().await;
    up.stop().await;
    net.stop().await;
    drop(fs);
}

#[tokio::test]
async fn tern_starts_on_a_disk_with_no_byte_free_and_drains_it() {
    let Some(fs) = small_disk() else { return };
    let net = Net::new(ZONE).await;
    let down = net.sink_with(10, common::admin::refusing()).await;
    let cfg = config(&net, &fs);
    let tern = Tern::start(cfg.clone()).await;
    let accepted = fill(&tern).await;
    tern.stop().await;
    // Something else takes the rest of the disk.
    let filler = fs.path().join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 64 << 10];
    while std::io::Write::write_all(&mut f, &block).is_ok() {}
    drop(f);

    // It starts (the door says 4xx), and drains once the receiver answers.
    let tern = Tern::start(cfg).await;
    let greeting = {
        use tokio::io::AsyncBufReadExt;
        let s = tokio::net::TcpStream::connect(tern.addr).await.unwrap();
        let mut line = String::new();
        tokio::io::BufReader::new(s)
            .read_line(&mut line)
            .await
            .unwrap();
        line
    };
    assert!(greeting.starts_with("421"), "{greeting}");
    let addr = down.addr;
    down.stop().await;
    let up = Sink::start_with(addr, SinkOptions::default()).await;
    all_delivered_and_open(&tern, &up, &accepted).await;
    tern.stop().await;
    up.stop().await;
    net.stop().await;
    drop(fs);
}
