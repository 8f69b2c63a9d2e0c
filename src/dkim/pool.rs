//! The signing threads: DKIM's RSA arithmetic (about 0.7 ms a message)
//! runs here, never on the threads that serve SMTP sessions, so a burst
//! of signing cannot stall the sessions' I/O. Jobs wait in one FIFO queue
//! that a fixed set of threads drain; a job's answer comes back on a
//! oneshot channel. The threads end when the pool is dropped.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads running closures in arrival order.
pub struct SignPool {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    threads: Vec<JoinHandle<()>>,
}

/// The pool's threads are gone (only while shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the signing threads have stopped")]
pub struct PoolStopped;

impl SignPool {
    /// Starts `threads` threads (at least one).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..threads.max(1))
            .map(|i| {
                let rx = Arc::clone(&rx);
                std::thread::Builder::new()
                    .name(format!("tern-dkim-{i}"))
                    .spawn(move || worker(&rx))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Self {
            jobs: Mutex::new(Some(tx)),
            threads,
        })
    }

    /// Runs `f` on a pool thread and returns its result.
    pub async fn run<T, F>(&self, f: F) -> Result<T, PoolStopped>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        {
            let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            let sender = jobs.as_ref().ok_or(PoolStopped)?;
            sender.send(job).map_err(|_| PoolStopped)?;
        }
        rx.await.map_err(|_| PoolStopped)
    }

    /// How many threads sign.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }
}

fn worker(rx: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        // Hold the lock only to take a job, not while running it.
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        match job {
            // A panicking job must not take the thread with it.
            Ok(job) => {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
            Err(_) => return, // the pool was dropped
        }
    }
}

impl Drop for SignPool {
    fn drop(&mut self) {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_off_the_calling_thread_and_the_pool_stops() {
        let pool = SignPool::new(2).unwrap();
        let here = std::thread::current().id();
        let mut names = Vec::new();
        for i in 0..8u32 {
            let (n, id) = pool
                .run(move || {
                    let t = std::thread::current();
                    (i * 2, (t.name().map(str::to_owned), t.id()))
                })
                .await
                .unwrap();
            assert_eq!(n, i * 2);
            assert_ne!(id.1, here);
            names.push(id.0.unwrap());
        }
        assert!(names.iter().all(|n| n.starts_with("tern-dkim-")));
        assert_eq!(pool.threads(), 2);
        drop(pool); // joins the threads: the test would hang if they did not end
    }
}
