//! `tern dkim keygen`, `tern dkim record` and the DKIM part of
//! `tern check-config`, run as the binary.

use std::path::{Path, PathBuf};
use std::process::Command;

fn tern() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tern"))
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("run tern");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `tern dkim VERB --domain shop.example --selector SELECTOR`.
fn dkim(verb: &str, selector: &str) -> Command {
    let mut c = tern();
    c.args([
        "dkim",
        verb,
        "--domain",
        "shop.example",
        "--selector",
        selector,
    ]);
    c
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dkim")
        .join(name)
}

fn key_entry(domain: &str, selector: &str, algorithm: &str, key: &Path) -> String {
    format!(
        "[[dkim.key]]\ndomain = \"{domain}\"\nselector = \"{selector}\"\nalgorithm = \"{algorithm}\"\nkey = \"{}\"\n",
        key.display()
    )
}

#[test]
fn keygen_writes_a_key_the_config_accepts_and_prints_its_record() {
    let dir = tempfile::tempdir().unwrap();
    for (alg, selector, k) in [("rsa", "s1", "k=rsa"), ("ed25519", "e1", "k=ed25519")] {
        let out_file = dir.path().join(format!("{selector}.pem"));
        let (ok, out, err) = run(dkim("keygen", selector)
            .args(["--algorithm", alg, "--bits", "1024", "--out"])
            .arg(&out_file));
        assert!(ok, "{err}");
        let zone = format!("{selector}._domainkey.shop.example. IN TXT ( \"v=DKIM1; {k}; p=");
        assert!(out.contains(&zone), "{out}");
        assert!(out.contains("[[dkim.key]]"), "{out}");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&out_file).unwrap().permissions(),
        );
        assert_eq!(
            mode & 0o777,
            0o600,
            "the private key is readable by its owner only"
        );

        // `dkim record` prints the same record from the file.
        let (ok, record, err) = run(dkim("record", selector).arg("--key").arg(&out_file));
        assert!(ok, "{err}");
        assert!(out.contains(record.trim()), "{record}\nvs\n{out}");

        // Never overwrites.
        let (ok, _, err) = run(dkim("keygen", selector)
            .args(["--algorithm", alg, "--out"])
            .arg(&out_file));
        assert!(!ok && err.contains("exists"), "{err}");
    }
    let config = dir.path().join("t.toml");
    let algs = key_entry(
        "shop.example",
        "s1",
        "rsa-sha256",
        &dir.path().join("s1.pem"),
    ) + &key_entry(
        "shop.example",
        "e1",
        "ed25519-sha256",
        &dir.path().join("e1.pem"),
    );
    std::fs::write(&config, algs).unwrap();
    let (ok, _, err) = run(tern().arg("check-config").arg(&config));
    assert!(ok, "{err}");
}

#[test]
fn keygen_refuses_bad_sizes_and_names() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = run(tern()
        .args([
            "dkim",
            "keygen",
            "--domain",
            "shop.example",
            "--selector",
            "s",
            "--bits",
            "512",
            "--out",
        ])
        .arg(dir.path().join("k.pem")));
    assert!(!ok && err.contains("1024 to 4096"), "{err}");
    let (ok, _, err) = run(tern()
        .args([
            "dkim",
            "keygen",
            "--domain",
            "shop example",
            "--selector",
            "s",
            "--out",
        ])
        .arg(dir.path().join("k.pem")));
    assert!(!ok && err.contains("not an ASCII domain name"), "{err}");
    assert!(!dir.path().join("k.pem").exists());
}

#[test]
fn check_config_reports_each_bad_key_by_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let entries = [
        key_entry(
            "a.example",
            "missing",
            "rsa-sha256",
            &dir.path().join("nope.pem"),
        ),
        key_entry(
            "a.example",
            "weak",
            "rsa-sha256",
            &fixture("rsa512.pkcs1.pem"),
        ),
        key_entry("a.example", "ec", "rsa-sha256", &fixture("ec.pem")),
        key_entry("a.example", "enc", "rsa-sha256", &fixture("encrypted.pem")),
        key_entry("a.example", "wrong", "rsa-sha256", &fixture("ed25519.pem")),
        key_entry(
            "a.example",
            "good",
            "rsa-sha256",
            &fixture("rsa2048.pkcs8.pem"),
        ),
        key_entry(
            "a.example",
            "good",
            "ed25519-sha256",
            &fixture("ed25519.pem"),
        ),
    ];
    let text = format!(
        "[dkim]\ncanonicalization = \"relaxed\"\nheaders = [\"Subject\"]\nplatform_domain = \"p.example\"\n{}",
        entries.concat()
    );
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, text).unwrap();
    let (ok, _, err) = run(tern().arg("check-config").arg(&file));
    assert!(!ok);
    let expect = [
        "dkim.canonicalization: invalid canonicalization \"relaxed\"",
        "dkim.headers: must include From",
        "dkim.platform_domain: no [[dkim.key]] has domain \"p.example\"",
        "dkim.key[0].key: cannot read the key file",
        "dkim.key[1].key: the RSA key has 512 bits; DKIM keys must have 1024 to 4096",
        "dkim.key[2].key: an EC (SEC1) key",
        "dkim.key[3].key: the key is encrypted",
        "dkim.key[4].key: the key is ed25519-sha256, but the algorithm is rsa-sha256",
        "dkim.key[6].selector: domain \"a.example\" has selector \"good\" twice",
    ];
    for e in expect {
        assert!(err.contains(e), "missing {e:?} in:\n{err}");
    }
    assert!(err.contains("bad.toml:"), "{err}");
    assert!(!err.contains("dkim.key[5]"), "{err}");
}
