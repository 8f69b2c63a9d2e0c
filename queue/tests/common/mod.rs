//! Helpers shared by the queue's integration tests: messages, a queue in a
//! temporary directory, and a reader of the documented on-disk layout.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use queue::{Envelope, EnvelopeRecipient, NewMessage, Queue, QueueOptions, Timestamp};

pub const SEGMENT_HEADER_LEN: usize = 32;
pub const RECORD_MAGIC: [u8; 4] = 0xD1E6_5254u32.to_le_bytes();

pub fn message(n: u64, recipients: usize) -> NewMessage {
    let now = Timestamp::from_millis(1_700_000_000_000);
    NewMessage {
        id: None,
        envelope: Envelope {
            sender: format!("sender{n}@shop.example").into(),
            meta: n.to_le_bytes().to_vec().into(),
            recipients: (0..recipients)
                .map(|i| EnvelopeRecipient::new(format!("user{n}-{i}@d{}.example", i % 3)))
                .collect(),
        },
        arrival: now,
        first_attempt: now,
        priority: queue::DEFAULT_PRIORITY,
        body: body(n),
    }
}

/// A recipient's status once delivered (first attempt).
pub fn delivered() -> queue::RecipientStatus {
    queue::RecipientStatus {
        state: queue::RecipientState::Delivered,
        attempts: 1,
        next_attempt: Timestamp::default(),
        last_reply: None,
    }
}

pub fn body(n: u64) -> Bytes {
    Bytes::from(format!(
        "Subject: message {n}\r\nX-Test-Id: {n}\r\n\r\n{}\r\n",
        "body line\r\n".repeat((n % 7) as usize)
    ))
}

pub fn options(dir: &Path) -> QueueOptions {
    let mut o = QueueOptions::new(dir);
    o.segment_size = 64 << 10;
    o
}

pub fn open(dir: &Path) -> (Queue, queue::RecoveryReport) {
    Queue::open(options(dir)).expect("open queue")
}

/// Segment files of a spool, oldest first.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// (offset, total length, kind) of each record in a segment file, walking
/// the documented layout: magic u32, len u32, crc u32, payload (kind first).
pub fn records(file: &[u8]) -> Vec<(usize, usize, u8)> {
    let mut out = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    while pos + 12 <= file.len() && file[pos..pos + 4] == RECORD_MAGIC {
        let len = u32::from_le_bytes(file[pos + 4..pos + 8].try_into().unwrap()) as usize;
        if pos + 12 + len > file.len() {
            break;
        }
        out.push((pos, 12 + len, file[pos + 12]));
        pos += 12 + len;
    }
    out
}

/// The salt of a segment (header bytes 12..16).
pub fn salt(file: &[u8]) -> u32 {
    u32::from_le_bytes(file[12..16].try_into().unwrap())
}

/// A valid record of the given kind and payload for a segment with `salt`.
pub fn raw_record(salt: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), payload) ^ salt;
    [&RECORD_MAGIC[..], &len, &crc.to_le_bytes(), payload].concat()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
