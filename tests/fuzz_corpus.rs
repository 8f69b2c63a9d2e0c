//! The fuzz corpora, replayed in the normal suite: every input kept under
//! `fuzz/corpus/<target>/` (minimized with `cargo fuzz cmin`) and every
//! crash ever found (`fuzz/regressions/<target>/`) goes through the same
//! checks the fuzz targets run (`tests/fuzz/checks.rs`). See the README's
//! "Fuzzing" for running the targets themselves.

#[path = "fuzz/checks.rs"]
mod checks;

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in [
        root.join("corpus").join(target),
        root.join("regressions").join(target),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files {
            check(&std::fs::read(&f).unwrap());
            n += 1;
        }
    }
    n
}

#[test]
fn reply_dsn_corpus() {
    assert!(
        replay("reply_dsn", checks::reply_dsn) > 0,
        "a corpus is kept"
    );
}

#[test]
fn config_corpus() {
    assert!(replay("config", checks::config) > 0, "a corpus is kept");
}

#[test]
fn spool_record_corpus() {
    assert!(
        replay("spool_record", checks::spool_record) > 0,
        "a corpus is kept"
    );
}

#[test]
fn smtp_session_corpus() {
    assert!(
        replay("smtp_session", checks::smtp_session) > 0,
        "a corpus is kept"
    );
}

#[test]
fn dkim_sign_corpus() {
    assert!(
        replay("dkim_sign", checks::dkim_sign) > 0,
        "a corpus is kept"
    );
}

#[test]
fn dsn_fields_corpus() {
    assert!(
        replay("dsn_fields", checks::dsn_fields) > 0,
        "a corpus is kept"
    );
}

#[test]
fn delivery_log_corpus() {
    assert!(
        replay("delivery_log", checks::delivery_log) > 0,
        "a corpus is kept"
    );
}
