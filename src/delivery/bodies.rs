//! Reading message bodies from the spool without blocking the runtime.
//!
//! A body still in the spool's RAM cache (a message's first attempt) is
//! taken at once. Otherwise the read is a file read, done on the blocking
//! pool; reads asked for while one is under way join a list that the same
//! blocking task goes on reading, so a burst of them (delivery after a
//! restart, when no body is cached; a bounce of a million messages, each
//! DSN quoting its original) costs one hop to the blocking pool, not one
//! per message, each with its two thread wake-ups. When the list grows
//! (a slow disk), more tasks read it, a few dozen reads at a time each,
//! up to [`MAX_READERS`]: reads from a cold disk still go in parallel.
//!
//! Owns only the list of reads waiting; never changes the spool.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use queue::{MessageId, Queue, QueueError};
use tokio::sync::oneshot;

type Waiting = (MessageId, oneshot::Sender<Result<Bytes, QueueError>>);

/// Blocking tasks reading at once, at most.
const MAX_READERS: usize = 8;
/// Reads a task takes from the list at a time; another task starts while
/// more than this many wait per task running.
const CHUNK: usize = 32;

/// Reads waiting for a blocking task, and how many tasks are running.
#[derive(Default)]
struct List {
    waiting: VecDeque<Waiting>,
    running: usize,
}

/// Reads bodies off the runtime, the reads asked for at once sharing a
/// blocking task (a few, when many wait).
pub(crate) struct Bodies {
    queue: Arc<Queue>,
    list: Arc<Mutex<List>>,
}

impl Bodies {
    pub fn new(queue: Arc<Queue>) -> Self {
        Self {
            queue,
            list: Default::default(),
        }
    }

    /// A message's body: from the spool's cache, or read on the blocking
    /// pool; `None` if it cannot be read (logged with its queue id).
    pub async fn read(&self, id: MessageId) -> Option<Bytes> {
        if let Some(b) = self.queue.cached_body(id) {
            return Some(b);
        }
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut l = lock(&self.list);
            l.waiting.push_back((id, tx));
            let start =
                l.running == 0 || (l.running < MAX_READERS && l.waiting.len() > CHUNK * l.running);
            l.running += usize::from(start);
            start
        };
        if start {
            let reader = Reader {
                queue: self.queue.clone(),
                list: self.list.clone(),
                finished: false,
            };
            drop(tokio::task::spawn_blocking(move || reader.run()));
        }
        match rx.await {
            Ok(Ok(b)) => Some(b),
            Ok(Err(e)) => {
                tracing::error!(queue_id = %id, error = %e, "cannot read the message body");
                None
            }
            Err(_) => {
                tracing::error!(queue_id = %id, "cannot read the message body: the reader stopped");
                None
            }
        }
    }
}

/// The blocking task's work. Should it never run (the runtime shutting
/// down drops it) or stop half-way, dropping it lets the reads waiting
/// fail instead of waiting for ever, and the next read start a new one.
struct Reader {
    queue: Arc<Queue>,
    list: Arc<Mutex<List>>,
    finished: bool,
}

impl Reader {
    fn run(mut self) {
        read_all(&self.queue, &self.list);
        self.finished = true;
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if !self.finished {
            let mut l = lock(&self.list);
            l.running -= 1;
            if l.running == 0 {
                l.waiting.clear(); // nobody left to read: their askers see an error
            }
        }
    }
}

/// Reads waiting bodies, a chunk at a time, until none is left.
fn read_all(queue: &Queue, list: &Mutex<List>) {
    loop {
        let chunk: Vec<Waiting> = {
            let mut l = lock(list);
            if l.waiting.is_empty() {
                l.running -= 1;
                return;
            }
            let n = l.waiting.len().min(CHUNK);
            l.waiting.drain(..n).collect()
        };
        for (id, reply) in chunk {
            let _ = reply.send(queue.body(id)); // the asker may have gone
        }
    }
}

fn lock(list: &Mutex<List>) -> std::sync::MutexGuard<'_, List> {
    list.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(n: u64) -> queue::NewMessage {
        let now = queue::Timestamp::now();
        queue::NewMessage {
            id: None,
            envelope: queue::Envelope {
                sender: "a@b.example".into(),
                meta: Default::default(),
                recipients: vec![queue::EnvelopeRecipient::new("c@d.example")].into(),
            },
            arrival: now,
            first_attempt: now,
            priority: 0,
            body: Bytes::from(format!("Subject: {n}\r\n\r\nbody {n}\r\n")),
        }
    }

    /// Waits (bounded) until no reader runs: the last answer goes out just
    /// before the reader looks for more.
    async fn idle(bodies: &Bodies) -> bool {
        for _ in 0..500 {
            if lock(&bodies.list).running == 0 {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        false
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_asked_for_at_once_each_get_their_own_body() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = queue::QueueOptions::new(dir.path());
        opts.body_cache = 0; // every read goes to the file
        let queue = Arc::new(Queue::open(opts).unwrap().0);
        let mut ids = Vec::new();
        for n in 0..300 {
            ids.push((n, queue.enqueue(message(n)).await.unwrap()));
        }
        let bodies = Arc::new(Bodies::new(queue.clone()));
        let reads = ids.iter().map(|&(n, id)| {
            let bodies = bodies.clone();
            tokio::spawn(async move { (n, bodies.read(id).await) })
        });
        for read in reads.collect::<Vec<_>>() {
            let (n, body) = read.await.unwrap();
            assert_eq!(body, Some(message(n).body), "message {n}");
        }
        let gone = queue::MessageId::from_u64(1);
        assert_eq!(bodies.read(gone).await, None, "an unknown id reads nothing");
        assert!(idle(&bodies).await, "the reader ended");
        assert_eq!(
            bodies.read(ids[0].1).await,
            Some(message(0).body),
            "and starts again"
        );

        // A reader that never ran (a runtime shutting down drops it) lets
        // the reads waiting fail, and the next read starts another.
        assert!(idle(&bodies).await);
        let (tx, rx) = oneshot::channel();
        {
            let mut l = lock(&bodies.list);
            l.waiting.push_back((ids[1].1, tx));
            l.running = 1;
        }
        drop(Reader {
            queue: queue.clone(),
            list: bodies.list.clone(),
            finished: false,
        });
        let answer = tokio::time::timeout(std::time::Duration::from_secs(10), rx).await;
        let answer = answer.expect("the waiting read is not left hanging");
        assert!(answer.is_err(), "it fails");
        assert_eq!(bodies.read(ids[2].1).await, Some(message(2).body));
        queue.close();
    }
}
