//! The delivery log's file and the thread that writes it: it takes the
//! buffered lines at least every second (at once when a block is full or
//! a flush is asked for), writes them, and rotates the file when it
//! reaches its size or its age.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::Shared;
use crate::config::LogConfig;

/// The open log file.
pub(super) struct LogFile {
    path: PathBuf,
    out: File,
    size: u64,
    /// When the file was started (the age rotation counts from it).
    pub(super) opened: Instant,
    max_size: u64,
    max_age: Duration,
    keep: u32,
    failed: bool,
}

impl LogFile {
    /// Opens (appending to) the file `cfg` names.
    pub(super) fn open(cfg: &LogConfig) -> std::io::Result<Self> {
        let path = cfg.deliveries.clone();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let out = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = out.metadata()?.len();
        Ok(Self {
            path,
            out,
            size,
            opened: Instant::now(),
            max_size: cfg.deliveries_max_size.0.max(1),
            max_age: cfg.deliveries_rotate_after.get(),
            keep: cfg.deliveries_keep,
            failed: false,
        })
    }

    /// Writes a block of whole lines, rotating when the file is old
    /// enough, and between lines whenever the next would pass the size (a
    /// single line longer than the size gets a file of its own).
    fn write(&mut self, mut block: &[u8]) {
        if self.size > 0 && !self.max_age.is_zero() && self.opened.elapsed() >= self.max_age {
            self.rotate();
        }
        while !block.is_empty() {
            let room =
                usize::try_from(self.max_size.saturating_sub(self.size)).unwrap_or(usize::MAX);
            let n = if block.len() <= room {
                block.len()
            } else {
                match block[..room].iter().rposition(|b| *b == b'\n') {
                    Some(i) => i + 1,
                    None if self.size > 0 => {
                        self.rotate();
                        continue;
                    }
                    None => block
                        .iter()
                        .position(|b| *b == b'\n')
                        .map_or(block.len(), |i| i + 1),
                }
            };
            let res = self.out.write_all(&block[..n]);
            self.size += n as u64;
            self.note(res);
            block = &block[n..];
            if !block.is_empty() {
                self.rotate();
            }
        }
    }

    fn note(&mut self, res: std::io::Result<()>) {
        match res {
            Err(e) if !self.failed => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot write the delivery log");
                self.failed = true;
            }
            Ok(()) => self.failed = false,
            Err(_) => {}
        }
    }

    /// Renames `path` to `path.1` (shifting older ones) and starts afresh.
    fn rotate(&mut self) {
        let name = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.keep == 0 {
            let _ = fs::remove_file(&self.path);
        } else {
            let _ = fs::remove_file(name(self.keep));
            for n in (1..self.keep).rev() {
                let _ = fs::rename(name(n), name(n + 1));
            }
            let _ = fs::rename(&self.path, name(1));
        }
        match OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            Ok(f) => self.out = f,
            // Writes go on to the renamed file.
            Err(e) => self.note(Err(e)),
        }
        self.size = 0;
        self.opened = Instant::now();
    }
}

/// The writer thread: runs until the log is dropped, writing what is
/// buffered (a block may hold part of a line only at the budget's edge,
/// which `write` never lets happen: lines go in whole or not at all).
pub(super) fn run(shared: &Shared) {
    let mut spare = Vec::new();
    loop {
        let (block, target, stop) = {
            let mut p = shared.lock();
            while p.buf.len() < super::BLOCK && p.asked == p.written && !p.stop {
                let (g, timeout) = shared
                    .wake
                    .wait_timeout(p, Duration::from_secs(1))
                    .unwrap_or_else(|e| e.into_inner());
                p = g;
                if timeout.timed_out() {
                    break;
                }
            }
            let block = std::mem::replace(&mut p.buf, std::mem::take(&mut spare));
            (block, p.asked, p.stop)
        };
        if !block.is_empty() {
            let mut f = shared.file.lock().unwrap_or_else(|p| p.into_inner());
            f.write(&block);
        }
        spare = block;
        spare.clear();
        let mut p = shared.lock();
        p.written = p.written.max(target);
        shared.done.notify_all();
        if stop && p.buf.is_empty() {
            return;
        }
    }
}
