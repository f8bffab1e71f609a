//! The bounded pool for password hashing (argon2 verification, SCRAM key
//! derivation): `[login] hash_threads` threads, at most `hash_queue` jobs
//! waiting, each waiting at most `hash_timeout_ms`.
//!
//! Why not `spawn_blocking`: tokio's blocking pool grows to 512 threads, and
//! one argon2 verification (default parameters) holds 19 MiB while it runs.
//! 200 simultaneous wrong passwords took the node from 25 MB to 4.1 GB and
//! 25 s of CPU. Here at most `hash_threads` verifications run at once; a
//! login beyond the queue fails at once with [`AuthError::Busy`], and a job
//! whose caller gave up (timed out, disconnected) is skipped, not hashed.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::AuthError;
use crate::config::LoginConfig;

type Work = Box<dyn FnOnce() + Send>;

struct Job {
    deadline: Instant,
    /// Runs the work and sends its result; dropped unrun when stale.
    work: Work,
    /// Whether the caller still waits (its receiver is alive).
    wanted: Box<dyn Fn() -> bool + Send>,
}

pub struct HashPool {
    threads: usize,
    queue: usize,
    timeout: Duration,
    /// Started on first use: a node without hashed passwords has no threads.
    tx: OnceLock<SyncSender<Job>>,
}

impl std::fmt::Debug for HashPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashPool")
            .field("threads", &self.threads)
            .field("queue", &self.queue)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl HashPool {
    pub fn new(threads: usize, queue: usize, timeout: Duration) -> HashPool {
        let threads = if threads == 0 { std::thread::available_parallelism().map_or(2, |n| n.get()) } else { threads };
        HashPool { threads, queue, timeout, tx: OnceLock::new() }
    }

    pub fn from_config(c: &LoginConfig) -> HashPool {
        HashPool::new(c.hash_threads, c.hash_queue, Duration::from_millis(c.hash_timeout_ms))
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    fn sender(&self) -> &SyncSender<Job> {
        self.tx.get_or_init(|| {
            // Capacity = jobs waiting while every thread works.
            let (tx, rx) = sync_channel::<Job>(self.queue);
            let rx = Arc::new(Mutex::new(rx));
            for i in 0..self.threads {
                let rx = rx.clone();
                let spawned = std::thread::Builder::new().name(format!("herald-hash-{i}")).spawn(move || worker(&rx));
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "password hashing thread not started");
                }
            }
            tx
        })
    }

    /// Runs `work` on the pool. `Busy` when the queue is full or the result
    /// is not there within the timeout (the work is then skipped if it has
    /// not started; a started one finishes, holding one thread).
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, AuthError> {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let done_tx = Arc::new(Mutex::new(Some(done_tx)));
        let watch = done_tx.clone();
        let job = Job {
            deadline: Instant::now() + self.timeout,
            work: Box::new(move || {
                if let Some(tx) = done_tx.lock().take() {
                    let _ = tx.send(work());
                }
            }),
            wanted: Box::new(move || watch.lock().as_ref().is_some_and(|tx| !tx.is_closed())),
        };
        match self.sender().try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(AuthError::Busy),
            Err(TrySendError::Disconnected(_)) => {
                return Err(AuthError::Unavailable("password hashing threads are gone".into()))
            }
        }
        match tokio::time::timeout(self.timeout, done_rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(AuthError::Unavailable("password hashing job dropped".into())),
            Err(_) => Err(AuthError::Busy),
        }
    }
}

fn worker(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = match rx.lock().recv() {
            Ok(j) => j,
            Err(_) => return,
        };
        if Instant::now() >= job.deadline || !(job.wanted)() {
            continue; // its caller has already been told "busy" or left
        }
        (job.work)();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn runs_work_and_refuses_beyond_the_queue() {
        let pool = Arc::new(HashPool::new(1, 1, Duration::from_secs(5)));
        assert_eq!(pool.run(|| 2 + 2).await, Ok(4));
        // One running, one waiting: a third is refused at once.
        let gate = Arc::new(std::sync::Barrier::new(2));
        let g = gate.clone();
        let p = pool.clone();
        let running = tokio::spawn(async move { p.run(move || g.wait()).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let p = pool.clone();
        let waiting = tokio::spawn(async move { p.run(|| ()).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(pool.run(|| ()).await, Err(AuthError::Busy));
        gate.wait();
        assert_eq!(running.await.unwrap(), Ok(()));
        assert_eq!(waiting.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn a_job_whose_caller_timed_out_is_skipped() {
        let pool = Arc::new(HashPool::new(1, 4, Duration::from_millis(200)));
        let ran = Arc::new(AtomicUsize::new(0));
        let p = pool.clone();
        let slow = tokio::spawn(async move { p.run(|| std::thread::sleep(Duration::from_millis(500))).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = ran.clone();
        assert_eq!(pool.run(move || r.fetch_add(1, Ordering::SeqCst)).await, Err(AuthError::Busy), "timed out waiting");
        assert_eq!(slow.await.unwrap(), Err(AuthError::Busy));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(ran.load(Ordering::SeqCst), 0, "stale job not run");
        assert_eq!(pool.run(|| 7).await, Ok(7), "the pool still works");
    }
}
