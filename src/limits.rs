//! The process's limits and allocator settings, set once at start: the
//! open-file limit, raised to its hard limit and compared with what the
//! config may need (every SMTP client, every delivery connection, the
//! spool, the logs), so that a config that would run out of file
//! descriptors says so before it does; and glibc malloc's mmap threshold
//! (`tune_allocator`). Never changes anything else.

use crate::config::Config;

/// Descriptors Tern needs besides connections: spool segments, logs, the
/// resolver, the admin listener, the runtime.
const BASE: u64 = 256;

/// Raises the soft open-file limit to the hard limit; returns (before,
/// after). Errors leave the limit as it was.
pub fn raise_open_files() -> std::io::Result<(u64, u64)> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current.unwrap_or(u64::MAX);
    let hard = limit.maximum;
    if limit.current == hard {
        return Ok((before, before));
    }
    let raised = rustix::process::Rlimit {
        current: hard,
        maximum: hard,
    };
    setrlimit(Resource::Nofile, raised)?;
    Ok((before, hard.unwrap_or(u64::MAX)))
}

/// The hard open-file limit (what [`raise_open_files`] gives).
pub fn hard_open_files() -> u64 {
    use rustix::process::{Resource, getrlimit};
    getrlimit(Resource::Nofile).maximum.unwrap_or(u64::MAX)
}

/// Descriptors the config may need at once: every listener's
/// `max_connections`, a connection per message sent at once
/// (`max_in_flight`), and the rest.
pub fn open_files_needed(config: &Config) -> u64 {
    let clients: u64 = config
        .listeners
        .iter()
        .map(|l| u64::from(l.max_connections))
        .sum();
    clients + u64::from(config.delivery.max_in_flight) + BASE
}

/// A warning when the config may need more descriptors than `limit`.
pub fn warning(config: &Config, limit: u64) -> Option<String> {
    let needed = open_files_needed(config);
    (needed > limit).then(|| {
        format!(
            "the open-file limit is {limit}, and this config may need {needed} (listeners' max_connections, delivery.max_in_flight, and {BASE} for the spool and logs): raise the limit (LimitNOFILE= under systemd) or lower those, or clients will be refused with 421 when it runs out"
        )
    })
}

/// Allocations of at least this many bytes get pages of their own.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 128 << 10;

/// Fixes glibc malloc's mmap threshold at its initial 128 KiB. By default
/// glibc raises it to the size of each large block freed (up to 32 MiB),
/// so after the spool's recovery has freed its segment buffers, later
/// big transient allocations (a segment's decoded records, a release
/// plan) come from the heap, between long-lived queue entries, and their
/// pages are never given back: with a million queued messages, a node
/// settled at 352-358 bytes of RSS per message instead of 308 (`cargo
/// bench --bench relay -- --deferred 1000000`, README). Does nothing
/// where the allocator is not glibc's; a refusal is logged.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes the allocator's tuning; it is called
        // once, before the runtime's threads start.
        let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
        if ok != 1 {
            tracing::warn!("the allocator refused a fixed mmap threshold");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_that_needs_more_than_the_limit_is_warned_about() {
        let mut c = Config::default();
        c.listeners[0].max_connections = 1000;
        c.delivery.max_in_flight = 100;
        assert_eq!(open_files_needed(&c), 1356);
        assert!(warning(&c, 1024).unwrap().contains("may need 1356"));
        assert!(warning(&c, 4096).is_none());
    }
}
