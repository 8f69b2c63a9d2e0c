//! How the operator's verbs reach the running daemon: the admin API's
//! address, scheme and token, from `--admin URL` / `TERN_ADMIN` and
//! `--token-file` / `TERN_TOKEN`, else from only the `[admin]` section of
//! the config file (read leniently: the rest of a half-edited file never
//! locks the CLI out). It never reads the rest of the config.

use std::path::{Path, PathBuf};

use crate::config::AdminConfig;

/// The admin API, when not read from the config file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Access {
    /// The admin API's URL (`http://127.0.0.1:8025`, or `https://...`)
    /// instead of the config file's `[admin]`; also `TERN_ADMIN`.
    #[arg(long, global = true, value_name = "URL")]
    admin: Option<String>,
    /// A file whose first line is the admin token (else `TERN_TOKEN`,
    /// else the config's `[admin] token`).
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// With an `https://` URL: the certificate (PEM) the daemon serves,
    /// trusted exactly (else the system's roots); also `TERN_ADMIN_CERT`.
    #[arg(long, global = true, value_name = "FILE")]
    admin_cert: Option<PathBuf>,
}

/// The environment's say, read once by `main` (so that tests and
/// callers can give their own).
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `TERN_ADMIN`.
    pub admin: Option<String>,
    /// `TERN_TOKEN`.
    pub token: Option<String>,
    /// `TERN_ADMIN_CERT`.
    pub admin_cert: Option<PathBuf>,
}

impl Env {
    /// From the process's environment (empty values count as unset).
    pub fn from_process() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Self {
            admin: var("TERN_ADMIN"),
            token: var("TERN_TOKEN"),
            admin_cert: var("TERN_ADMIN_CERT").map(PathBuf::from),
        }
    }
}

impl Access {
    /// The admin API to call: the URL given (flag, then environment),
    /// else `[admin]` of `config`; the token from the file given, then
    /// the environment, then the config. An error says what is wrong.
    pub fn endpoint(&self, env: &Env, config: &Path) -> Result<AdminConfig, String> {
        let mut admin = match self.admin.as_ref().or(env.admin.as_ref()) {
            Some(url) => from_url(url)?,
            None => crate::config::load_admin(config).map_err(|e| {
                format!(
                    "{e}\n(only [admin] is read; give --admin URL or TERN_ADMIN to skip the file)"
                )
            })?,
        };
        if let Some(cert) = self.admin_cert.as_ref().or(env.admin_cert.as_ref()) {
            admin.tls_certificate = Some(cert.clone());
        }
        if let Some(file) = &self.token_file {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("--token-file {}: {e}", file.display()))?;
            let token = text.lines().next().unwrap_or("").trim().to_owned();
            if token.is_empty() {
                return Err(format!(
                    "--token-file {}: the file is empty",
                    file.display()
                ));
            }
            admin.token = Some(token);
        } else if let Some(t) = &env.token {
            admin.token = Some(t.clone());
        }
        Ok(admin)
    }
}

/// `http://HOST:PORT` or `https://HOST:PORT` (an address, not a name:
/// the CLI connects without DNS), a trailing `/` allowed.
fn from_url(url: &str) -> Result<AdminConfig, String> {
    let bad = |why: &str| format!("admin URL {url:?}: {why} (say http://127.0.0.1:8025)");
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(bad("it must start with http:// or https://"));
    };
    let address = rest
        .trim_end_matches('/')
        .parse()
        .map_err(|_| bad("not an IP address and port"))?;
    let mut admin = AdminConfig {
        address,
        ..AdminConfig::default()
    };
    if tls {
        // Only whether HTTPS is on matters to the client; the key stays
        // the daemon's.
        admin.tls_key = Some(PathBuf::new());
        admin.tls_certificate = Some(PathBuf::new());
    }
    Ok(admin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_the_address_and_scheme() {
        let a = from_url("http://127.0.0.1:9025/").unwrap();
        assert_eq!(a.address.to_string(), "127.0.0.1:9025");
        assert!(!a.tls());
        let a = from_url("https://[::1]:8443").unwrap();
        assert!(a.tls());
        assert!(from_url("127.0.0.1:8025").unwrap_err().contains("http://"));
        assert!(
            from_url("http://localhost:8025")
                .unwrap_err()
                .contains("IP address")
        );
    }

    #[test]
    fn the_token_comes_from_the_file_then_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-the-file-0123456789\n").unwrap();
        let env = Env {
            admin: Some("http://127.0.0.1:1".into()),
            token: Some("from-the-environment-01".into()),
            admin_cert: None,
        };
        let none = Path::new("/nonexistent/tern.toml");
        let a = Access::default().endpoint(&env, none).unwrap();
        assert_eq!(a.token.as_deref(), Some("from-the-environment-01"));
        let with_file = Access {
            token_file: Some(file),
            ..Access::default()
        };
        let a = with_file.endpoint(&env, none).unwrap();
        assert_eq!(a.token.as_deref(), Some("from-the-file-0123456789"));
    }
}
