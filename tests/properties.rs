//! Properties over generated inputs (proptest), in the normal suite:
//!
//! - dot-stuffing: what the client sends, read back by the server's data
//!   receiver (smtp-proto's, primed as Tern's server primes it), is the
//!   message (with one final CRLF);
//! - replies: what the server writes, the client reads back with the same
//!   code, enhanced code and text;
//! - GCRA: over any sequence of arrivals, the events a limiter lets through
//!   never exceed its rate plus its burst.
//!
//! The spool format's round trip is a property of the queue crate
//! (`queue/src/codec/props.rs`).

use std::time::Duration;

use proptest::prelude::*;
use smtp_proto::request::receiver::DataReceiver;
use tern::shaping::rate::Gcra;
use tern::smtp::client::{dot_stuff, parse_reply};
use tern::smtp::reply::Reply;

/// A message: lines of bytes without CR or LF (some starting with dots),
/// joined with CRLF, with or without a final CRLF.
fn message() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        proptest::collection::vec(
            any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
            0..40
        ),
        "\\.{1,3}[ -~]{0,10}".prop_map(String::into_bytes),
        Just(Vec::new()),
    ];
    (proptest::collection::vec(line, 0..30), any::<bool>()).prop_map(|(lines, final_crlf)| {
        let mut m = lines.join(&b"\r\n"[..]);
        if final_crlf && !m.is_empty() {
            m.extend_from_slice(b"\r\n");
        }
        m
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn dot_stuffing_round_trips_through_the_servers_receiver(m in message(), split in any::<prop::sample::Index>()) {
        let mut wire = Vec::new();
        dot_stuff(&m, &mut wire);
        let mut rx = DataReceiver::new();
        rx.ingest(&mut b"\r\n".iter(), &mut Vec::new()); // the DATA line's CRLF
        let mut got = Vec::new();
        let at = split.index(wire.len() + 1);
        let (a, b) = wire.split_at(at);
        let done = rx.ingest(&mut a.iter(), &mut got) || rx.ingest(&mut b.iter(), &mut got);
        prop_assert!(done, "the terminator ends the data");
        let mut want = m.clone();
        if !want.is_empty() && !want.ends_with(b"\r\n") {
            want.extend_from_slice(b"\r\n");
        }
        prop_assert_eq!(got, want);
    }

    #[test]
    fn a_reply_written_by_the_server_reads_back_the_same(
        code in 200u16..600,
        esc in (2u8..6, 0u8..8, 0u8..100),
        lines in proptest::collection::vec("[!-~][ -~]{0,60}", 1..5),
    ) {
        let esc = [esc.0, esc.1, esc.2];
        let r = Reply::owned(code, esc, lines.join("\n"));
        let mut wire = Vec::new();
        r.write(&mut wire);
        let (back, used) = parse_reply(&wire).unwrap().expect("a complete reply");
        prop_assert_eq!(used, wire.len());
        prop_assert_eq!(back.code, code);
        prop_assert_eq!(back.esc, esc);
        let text: Vec<&str> = lines.iter().map(|l| l.trim()).collect();
        prop_assert_eq!(back.text, text.join(" / "));
    }

    #[test]
    fn gcra_never_lets_more_through_than_its_rate_and_burst(
        count in 1u64..200,
        per in prop_oneof![Just("s"), Just("m")],
        burst in 1u64..20,
        gaps in proptest::collection::vec(0u64..2_000, 1..300),
    ) {
        let g = Gcra::new(format!("{count}/{per},burst={burst}").parse().unwrap());
        let start = tokio::time::Instant::now();
        let (mut tat, mut now, mut passed) = (None, start, Vec::new());
        for gap in gaps {
            now += Duration::from_millis(gap);
            if g.allows(tat, now) {
                g.record(&mut tat, now);
                passed.push(now);
            }
        }
        // Between any two events let through, at most `burst` more than
        // the rate allows: t_j - t_i + tolerance >= (j - i) * interval.
        let (interval, tolerance) = (g.interval(), g.tolerance());
        for i in 0..passed.len() {
            for j in i + 1..passed.len() {
                let span = passed[j] - passed[i] + tolerance;
                prop_assert!(
                    span >= interval * (j - i) as u32,
                    "{} events in {:?} at one per {:?} with a burst of {}",
                    j - i + 1, passed[j] - passed[i], interval, burst
                );
            }
        }
    }
}
