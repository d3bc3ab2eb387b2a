//! Threads kept for the agent's per-execution work (pumping an execution's output and its
//! standard input). Starting a thread costs a `clone`, a stack mapping with its guard page
//! and, when it ends, their undoing: under TCG a measurable part of a short execution's
//! round trip. A thread that finished its job waits for the next one instead, up to
//! [`MAX_IDLE`] of them; more run when more jobs run at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Idle threads kept at most: beyond it, a thread whose job ended exits.
const MAX_IDLE: usize = 8;

struct Pool {
    jobs: mpsc::Sender<Job>,
    waiting: Mutex<mpsc::Receiver<Job>>,
    /// Threads waiting for a job that no caller has claimed yet.
    idle: AtomicUsize,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let (jobs, waiting) = mpsc::channel();
        Pool {
            jobs,
            waiting: Mutex::new(waiting),
            idle: AtomicUsize::new(0),
        }
    })
}

/// Runs `job` on a thread of its own: an idle one if there is one, else a new one.
pub fn run(job: impl FnOnce() + Send + 'static) {
    let pool = pool();
    let claimed = pool
        .idle
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok();
    if claimed {
        // The claimed thread is (or is about to be) waiting on the channel.
        if let Err(mpsc::SendError(job)) = pool.jobs.send(Box::new(job)) {
            std::thread::spawn(job);
        }
    } else {
        std::thread::spawn(move || work(pool, Box::new(job)));
    }
}

/// A pool thread: runs `job`, then the jobs handed to it while it is idle.
fn work(pool: &'static Pool, mut job: Job) {
    loop {
        job();
        let kept = pool
            .idle
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_IDLE).then_some(n + 1)
            })
            .is_ok();
        if !kept {
            return;
        }
        // Several idle threads wait here in turn; each job goes to exactly one of them.
        let next = pool.waiting.lock().expect("pool lock").recv();
        match next {
            Ok(next) => job = next,
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use std::time::Duration;

    #[test]
    fn jobs_run_at_once_and_idle_threads_are_reused() {
        // Two jobs that wait for each other: both must run at the same time.
        let (a_tx, a_rx) = channel::<()>();
        let (b_tx, b_rx) = channel::<()>();
        let (done_tx, done_rx) = channel::<std::thread::ThreadId>();
        let done = done_tx.clone();
        run(move || {
            a_tx.send(()).unwrap();
            b_rx.recv_timeout(Duration::from_secs(5)).unwrap();
            done.send(std::thread::current().id()).unwrap();
        });
        let done = done_tx.clone();
        run(move || {
            a_rx.recv_timeout(Duration::from_secs(5)).unwrap();
            b_tx.send(()).unwrap();
            done.send(std::thread::current().id()).unwrap();
        });
        let first: Vec<_> = (0..2)
            .map(|_| done_rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        assert_ne!(first[0], first[1]);
        // Once they are idle, the next job runs on one of their threads.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pool().idle.load(Ordering::Acquire) < 2 {
            assert!(std::time::Instant::now() < deadline, "threads not idle");
            std::thread::sleep(Duration::from_millis(5));
        }
        let done = done_tx.clone();
        run(move || done.send(std::thread::current().id()).unwrap());
        let reused = done_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(first.contains(&reused), "a new thread ran the job");
    }
}
