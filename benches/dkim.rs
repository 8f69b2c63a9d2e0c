//! DKIM signing cost of a 4 KB message, RSA-2048 and Ed25519 (relaxed/
//! relaxed, the default header list with oversigning): the signature
//! alone (mail-auth with Tern's keys, on this thread), and through Tern's
//! signer (`Dkim::sign`: for RSA the hop to a signing thread and back, for
//! a small message signed with Ed25519 alone no hop; and the insertion of
//! the fields), to show what the hop costs.
//!
//! ```text
//! cargo bench --bench dkim
//! ```

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mail_auth::dkim::{Canonicalization, DkimSigner};
use tern::config::{DkimConfig, DkimKeyConfig, KeyAlgorithm};
use tern::dkim::Dkim;
use tern::dkim::key::{Algorithm, PrivateKey};

fn message(size: usize) -> Vec<u8> {
    let mut m = b"Received: from bench.example ([127.0.0.1])\r\n\tby mta.example (Tern) with ESMTP id 0000000000000001;\r\n\tMon, 23 Nov 2026 06:00:00 +0000\r\nFrom: app@shop.example\r\nTo: user@d.example\r\nSubject: benchmark\r\nMessage-ID: <m@shop.example>\r\nDate: Mon, 23 Nov 2026 06:00:00 +0000\r\n\r\n".to_vec();
    while m.len() < size {
        m.extend_from_slice(
            b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n",
        );
    }
    m
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dkim")
        .join(name)
}

fn bench(c: &mut Criterion) {
    let msg = message(4096);
    let headers = DkimConfig::default().signed_headers();
    let mut g = c.benchmark_group("dkim");
    g.throughput(Throughput::Elements(1));
    let keys = [
        (
            "rsa-2048",
            "rsa2048.pkcs8.pem",
            Algorithm::RsaSha256,
            KeyAlgorithm::RsaSha256,
        ),
        (
            "ed25519",
            "ed25519.pem",
            Algorithm::Ed25519Sha256,
            KeyAlgorithm::Ed25519Sha256,
        ),
    ];
    for (name, file, alg, _) in keys {
        let key = PrivateKey::load(&fixture(file), alg).unwrap();
        let signer = DkimSigner::from_key(key)
            .domain("shop.example")
            .selector("s1")
            .headers(headers.iter().cloned())
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed);
        g.bench_function(format!("sign 4 KB, {name}"), |b| {
            b.iter(|| black_box(signer.sign(black_box(&msg)).unwrap()))
        });
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for (name, file, _, algorithm) in keys {
        let cfg = DkimConfig {
            keys: vec![DkimKeyConfig {
                domain: "shop.example".into(),
                selector: "s1".into(),
                algorithm,
                key: fixture(file),
            }],
            threads: 1,
            ..DkimConfig::default()
        };
        let dkim = Dkim::from_config(&cfg).unwrap().unwrap();
        g.bench_function(
            format!("Dkim::sign 4 KB through Tern's signer, {name}"),
            |b| {
                b.iter(|| {
                    let choice = dkim.choose(Some("shop.example"), "");
                    let (signed, r) = rt.block_on(dkim.sign(msg.clone(), choice)).unwrap();
                    r.unwrap();
                    black_box(signed)
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
