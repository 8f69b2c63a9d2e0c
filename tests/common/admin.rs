//! Helpers of the admin API tests: a daemon with its API on the test's
//! network, calls off the runtime, the `tern` CLI against it.

use std::net::SocketAddr;
use std::path::PathBuf;

use tern::config::{AdminConfig, Config};

use super::net::{Net, Tern, submit};
use super::sink::SinkOptions;

pub const TOKEN: &str = "a-test-token-of-some-length";

/// The admin config of a test: its own address, a token.
pub fn admin(net: &Net) -> AdminConfig {
    let probe = std::net::TcpListener::bind((net.ip(80), 0)).unwrap();
    let address: SocketAddr = probe.local_addr().unwrap();
    drop(probe);
    AdminConfig {
        enabled: true,
        address,
        token: Some(TOKEN.into()),
        ..AdminConfig::default()
    }
}

/// Calls off the test's runtime (the daemon runs on it).
pub async fn call<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Sink options: refuse every connection (mail stays deferred).
pub fn refusing() -> SinkOptions {
    SinkOptions {
        refuse: true,
        ..SinkOptions::default()
    }
}

/// Submits one message to `to`, which must be accepted.
pub async fn submit_ok(tern: &Tern, to: &[&str]) {
    let r = submit(tern.addr, "app@shop.test", to, b"Subject: s\r\n\r\nb\r\n").await;
    assert!(r.starts_with("250"), "{r}");
}

/// Runs `tern ARGS --config FILE`; (success, stdout and stderr).
pub async fn tern_cli(args: Vec<&'static str>, file: PathBuf) -> (bool, String) {
    call(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(args)
            .arg("--config")
            .arg(&file)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), format!("{text}{err}"))
    })
    .await
}

pub fn config(net: &Net, a: &AdminConfig) -> Config {
    let mut c = net.config();
    c.admin = a.clone();
    c
}

/// A config file for the CLI: the admin address and token only.
pub fn cli_file(net: &Net, a: &AdminConfig) -> PathBuf {
    let file = net.dir.path().join("cli.toml");
    let text = format!(
        "[admin]\naddress = \"{}\"\ntoken = \"{TOKEN}\"\n",
        a.address
    );
    std::fs::write(&file, text).unwrap();
    file
}

/// Waits (at most 10 s) until the daemon's API answers.
pub async fn wait_up(a: &AdminConfig) {
    let cfg = a.clone();
    let up = call(move || {
        (0..200).any(|_| {
            let ok =
                tern::admin::client::get::<tern::admin::types::Health>(&cfg, "/v1/health").is_ok();
            if !ok {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            ok
        })
    })
    .await;
    assert!(up, "the admin API did not come up");
}

/// Writes `cfg` to `file` and starts Tern from it (so it can reload).
pub async fn start_from_file(mut cfg: Config, file: &std::path::Path) -> Tern {
    std::fs::write(file, toml::to_string(&cfg).unwrap()).unwrap();
    cfg.file = Some(file.to_owned());
    Tern::start(cfg).await
}

/// Writes `cfg` to `file` and has the daemon reload it.
pub async fn reload_with(
    a: &AdminConfig,
    file: &std::path::Path,
    cfg: &Config,
) -> Result<tern::admin::types::Reloaded, tern::admin::client::CallError> {
    std::fs::write(file, toml::to_string(cfg).unwrap()).unwrap();
    let a = a.clone();
    call(move || tern::admin::client::send(&a, "POST", "/v1/reload", &())).await
}
