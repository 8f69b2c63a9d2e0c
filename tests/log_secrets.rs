//! No credential ever reaches the diagnostic log. In a test binary of its
//! own: tracing caches per-callsite interest process-wide, so a capturing
//! subscriber must not share the process with other tests.

mod common;

use std::sync::Arc;

use common::{PASSWORD, plain, tls_session};

const STRANGER: &str = "192.0.2.99";

#[tokio::test]
async fn passwords_never_reach_the_log() {
    use std::sync::Mutex;
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(capture.clone())
        .with_max_level(tracing::Level::TRACE)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let mut s = tls_session(STRANGER).await;
    s.cmd(
        &format!("AUTH PLAIN {}", plain("app", "hunter2-wrong")),
        "535",
    )
    .await;
    s.cmd(&format!("AUTH PLAIN {}", plain("app", PASSWORD)), "235")
        .await;
    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("authenticated"),
        "the log did capture the session: {log}"
    );
    for secret in [
        "hunter2-wrong",
        PASSWORD,
        &plain("app", PASSWORD),
        &plain("app", "hunter2-wrong"),
    ] {
        assert!(!log.contains(secret), "{secret:?} appears in the log");
    }
}
