//! The session's parse path, without I/O or fsync: a pipelined
//! MAIL/RCPT/DATA group and a 4 KB message through the sans-IO protocol,
//! up to the hand-over to the intake (Received header included).
//!
//! ```text
//! cargo bench --bench smtp_parse
//! ```

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use queue::Queue;
use tern::config::Config;
use tern::smtp::server::protocol::{Protocol, Step};

fn message_body(size: usize) -> Vec<u8> {
    let mut body = b"From: app@shop.example\r\nTo: user@one.example\r\nSubject: benchmark\r\nMessage-ID: <m@shop.example>\r\nDate: Mon, 23 Nov 2026 06:00:00 +0000\r\n\r\n".to_vec();
    while body.len() < size {
        body.extend_from_slice(
            b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n",
        );
    }
    body.extend_from_slice(b".\r\n");
    body
}

fn protocol(dir: &std::path::Path) -> Protocol {
    let mut cfg = Config::default();
    cfg.queue.path = dir.join("spool");
    cfg.queue.min_free_space = tern::config::values::ByteSize(0);
    let (queue, _) = Queue::open(cfg.queue.options()).expect("queue");
    let queue = Arc::new(queue);
    let log = Arc::new(tern::log::DeliveryLog::disabled());
    let mut services =
        tern::daemon::Services::new(&cfg, Vec::new(), queue, log, tern::clock::Clock::new())
            .expect("services");
    services.memory = tern::smtp::server::MemoryBudget::new(0);
    let ctx =
        tern::daemon::session_context(&cfg, &cfg.listeners[0], None, &services).expect("context");
    let mut p = Protocol::new(Arc::new(ctx), "127.0.0.1".parse().unwrap());
    p.greeting();
    p.feed(b"EHLO bench.example\r\n");
    p.out.clear();
    p
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut p = protocol(dir.path());
    let commands =
        b"MAIL FROM:<app@shop.example> SIZE=4200\r\nRCPT TO:<user@one.example>\r\nDATA\r\n";
    let body = message_body(4096);
    let mut g = c.benchmark_group("smtp_parse");
    g.throughput(Throughput::Elements(1));
    g.bench_function("pipelined commands + 4 KB DATA", |b| {
        b.iter(|| {
            let (_, step) = p.feed(commands);
            assert!(matches!(step, Step::NeedInput));
            let (_, step) = p.feed(&body);
            let Step::Deliver(sub) = step else {
                panic!("message not complete")
            };
            black_box(sub);
            p.out.clear();
        })
    });
    g.bench_function("MAIL + RCPT + RSET", |b| {
        b.iter(|| {
            let (_, step) =
                p.feed(b"MAIL FROM:<app@shop.example>\r\nRCPT TO:<user@one.example>\r\nRSET\r\n");
            assert!(matches!(step, Step::NeedInput));
            p.out.clear();
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
