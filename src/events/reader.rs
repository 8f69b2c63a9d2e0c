//! Reads the delivery log's events in order from a sequence number on,
//! across its rotated files (`deliveries.jsonl.N` ... `.1`, then the
//! current one), following the current file as it grows and moving on
//! when it is rotated. Blocking file I/O: the exporter calls it from a
//! blocking thread. Owns reading; never writes the log.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::log::line_seq;

/// A reader positioned after a sequence number.
pub struct LogReader {
    base: PathBuf,
    keep: u32,
    /// The file being read, its inode, and a partial last line.
    open: Option<(BufReader<File>, u64)>,
    partial: Vec<u8>,
    /// The last sequence number handed out (or skipped).
    last: u64,
    /// Events that were gone (rotated away) before they were read.
    pub lost: u64,
}

/// The first line's sequence number of a file.
fn first_seq(path: &Path) -> Option<u64> {
    let f = File::open(path).ok()?;
    let mut line = Vec::new();
    BufReader::new(f).read_until(b'\n', &mut line).ok()?;
    line_seq(&line)
}

impl LogReader {
    /// A reader of the log at `base` (keeping `keep` rotated files) that
    /// hands out the events after `after`.
    pub fn new(base: &Path, keep: u32, after: u64) -> Self {
        let mut r = Self {
            base: base.to_owned(),
            keep,
            open: None,
            partial: Vec::new(),
            last: after,
            lost: 0,
        };
        r.locate();
        r
    }

    /// The files, oldest first.
    fn files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = (1..=self.keep)
            .rev()
            .map(|n| PathBuf::from(format!("{}.{n}", self.base.display())))
            .filter(|p| p.exists())
            .collect();
        v.push(self.base.clone());
        v
    }

    /// Opens the file holding the event after `last`: the newest whose
    /// first event is at most that one (or the oldest there is).
    fn locate(&mut self) {
        let files = self.files();
        let firsts: Vec<(PathBuf, Option<u64>)> = files
            .into_iter()
            .map(|p| (p.clone(), first_seq(&p)))
            .collect();
        let want = self.last + 1;
        let chosen = firsts
            .iter()
            .rev()
            .find(|(_, f)| f.is_some_and(|f| f <= want))
            .or_else(|| firsts.iter().find(|(_, f)| f.is_some()))
            .or(firsts.last());
        let Some((path, first)) = chosen else { return };
        if let Some(f) = first
            && *f > want
            && self.last > 0
        {
            self.lost += f - want;
        }
        self.open = File::open(path).ok().and_then(|f| {
            let ino = f.metadata().ok()?.ino();
            Some((BufReader::new(f), ino))
        });
        self.partial.clear();
    }

    /// Up to `max` events after the last one handed out, each with its
    /// sequence number; empty when there is nothing new now.
    pub fn next(&mut self, max: usize) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        for _ in 0..self.keep + 2 {
            self.read_into(&mut out, max);
            if out.len() >= max || !self.rotated() {
                break;
            }
            // This file was rotated away and is read to its end: go on
            // with the next one.
            self.locate();
        }
        out
    }

    fn read_into(&mut self, out: &mut Vec<(u64, Vec<u8>)>, max: usize) {
        let Some((file, _)) = &mut self.open else {
            self.locate();
            return;
        };
        while out.len() < max {
            let mut line = std::mem::take(&mut self.partial);
            match file.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => {
                    self.partial = line;
                    return;
                }
                Ok(_) if !line.ends_with(b"\n") => {
                    // A line being written: wait for its end.
                    self.partial = line;
                    return;
                }
                Ok(_) => {}
            }
            let Some(seq) = line_seq(&line) else { continue };
            if seq <= self.last {
                continue;
            }
            self.last = seq;
            line.pop();
            out.push((seq, line));
        }
    }

    /// True when the file being read is no longer the current one.
    fn rotated(&mut self) -> bool {
        let current = std::fs::metadata(&self.base).map(|m| m.ino()).ok();
        match &mut self.open {
            Some((f, ino)) => {
                if current == Some(*ino) {
                    return false;
                }
                // Read to its end? (more may have been written before the
                // rename.)
                let pos = f.stream_position().unwrap_or(0);
                let len = f.get_ref().metadata().map(|m| m.len()).unwrap_or(0);
                pos >= len && self.partial.is_empty()
            }
            None => true,
        }
    }

    /// The sequence number of the last event handed out.
    pub fn last(&self) -> u64 {
        self.last
    }
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogReader({}, after {})", self.base.display(), self.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LogConfig;
    use crate::config::values::ByteSize;
    use crate::log::{DeliveryLog, Kind, Record};

    fn record(i: usize) -> Record<'static> {
        Record::new(
            Kind::Reception,
            std::time::SystemTime::now(),
            format!("q{i}"),
            "s@x.example",
        )
    }

    #[test]
    fn events_come_in_order_across_rotations_and_from_a_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            deliveries: dir.path().join("d.jsonl"),
            deliveries_max_size: ByteSize(2000),
            deliveries_keep: 50,
            ..LogConfig::default()
        };
        let log = DeliveryLog::open(&cfg, "n1").unwrap();
        let mut r = LogReader::new(&cfg.deliveries, 50, 0);
        let mut got = Vec::new();
        for i in 0..100 {
            log.write(&record(i));
            if i % 7 == 0 {
                log.flush();
                got.extend(r.next(1000));
            }
        }
        log.flush();
        for _ in 0..5 {
            got.extend(r.next(1000));
        }
        assert_eq!(got.len(), 100, "every event once");
        assert!(
            got.windows(2).all(|w| w[1].0 == w[0].0 + 1),
            "in order, none skipped"
        );
        assert!(String::from_utf8_lossy(&got[99].1).contains("\"queue_id\":\"q99\""));
        // From a cursor in the middle, after a restart of the reader.
        let mut r = LogReader::new(&cfg.deliveries, 50, got[41].0);
        let again = r.next(1000);
        assert_eq!(again.first().map(|e| e.0), Some(got[42].0));
        assert_eq!(again.len(), 58, "the rest, from the rotated files on");
        assert_eq!(r.lost, 0);
        // Rotated away: counted as lost.
        let mut r = LogReader::new(&cfg.deliveries, 2, got[10].0);
        let tail = r.next(1000);
        assert!(
            r.lost > 0 && tail.len() < 89,
            "{} lost, {} read",
            r.lost,
            tail.len()
        );
    }
}
