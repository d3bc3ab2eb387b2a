//! Completing asyncio futures without taking the GIL on engine threads.
//!
//! pyo3-async-runtimes completes a future by taking the GIL on a tokio blocking thread; when
//! that races with interpreter shutdown the process aborts ("PyGILState_Release: thread state
//! must be current"). Here engine threads never touch Python: a finished operation's Rust value
//! goes into a queue and an eventfd is signalled; the event loop, which watches the eventfd
//! with `add_reader`, drains the queue on its own thread and converts the values there.

use std::collections::HashMap;
use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;
use tokio::task::AbortHandle;

/// The engine's tokio runtime, shared by every runtime and event loop of the process.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("boxlite-engine")
            .enable_all()
            .build()
            .expect("the engine's tokio runtime starts")
    })
}

/// A finished operation's result, converted to Python on the event loop's thread.
pub type Outcome = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

struct Inner {
    eventfd: OwnedFd,
    done: Mutex<Vec<(u64, Outcome)>>,
    running: Mutex<HashMap<u64, AbortHandle>>,
    next_token: AtomicU64,
}

impl Inner {
    fn finish(&self, token: u64, outcome: Outcome) {
        self.done.lock().expect("done lock").push((token, outcome));
        self.running.lock().expect("running lock").remove(&token);
        let one: u64 = 1;
        // SAFETY: an 8-byte write to our eventfd.
        unsafe { libc::write(self.eventfd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

/// One per event loop: the queue of finished operations and the eventfd that announces them.
#[pyclass(name = "Completer", module = "boxlite._engine", frozen)]
pub struct Completer {
    inner: Arc<Inner>,
}

impl Completer {
    /// Runs `future` on the engine runtime; returns the token its outcome will carry.
    pub fn spawn<F>(&self, future: F) -> u64
    where
        F: Future<Output = Outcome> + Send + 'static,
    {
        let token = self.inner.next_token.fetch_add(1, Ordering::Relaxed);
        let inner = self.inner.clone();
        // The lock orders this insert before the task's own removal.
        let mut running = self.inner.running.lock().expect("running lock");
        let handle = runtime().spawn(async move {
            let outcome = future.await;
            inner.finish(token, outcome);
        });
        running.insert(token, handle.abort_handle());
        token
    }
}

#[pymethods]
impl Completer {
    #[new]
    fn new() -> PyResult<Self> {
        // SAFETY: eventfd(2) returns a fresh descriptor that we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(Completer {
            inner: Arc::new(Inner {
                // SAFETY: fd is valid and owned by nobody else.
                eventfd: unsafe { OwnedFd::from_raw_fd(fd) },
                done: Mutex::new(Vec::new()),
                running: Mutex::new(HashMap::new()),
                next_token: AtomicU64::new(1),
            }),
        })
    }

    /// The eventfd to watch for readability.
    fn fileno(&self) -> i32 {
        self.inner.eventfd.as_raw_fd()
    }

    /// Finished operations as `(token, ok, value_or_exception)`.
    fn take(&self, py: Python<'_>) -> Vec<(u64, bool, Py<PyAny>)> {
        let mut counter = 0u64;
        // SAFETY: an 8-byte read from our non-blocking eventfd resets it.
        unsafe {
            libc::read(
                self.inner.eventfd.as_raw_fd(),
                (&mut counter as *mut u64).cast(),
                8,
            )
        };
        let done = std::mem::take(&mut *self.inner.done.lock().expect("done lock"));
        done.into_iter()
            .map(|(token, outcome)| match outcome(py) {
                Ok(value) => (token, true, value),
                Err(err) => (token, false, err.into_value(py).into_any()),
            })
            .collect()
    }

    /// Abandons an operation whose awaiting coroutine was cancelled.
    fn cancel(&self, token: u64) {
        if let Some(handle) = self
            .inner
            .running
            .lock()
            .expect("running lock")
            .remove(&token)
        {
            handle.abort();
        }
    }

    /// Operations still running.
    fn pending(&self) -> usize {
        self.inner.running.lock().expect("running lock").len()
    }
}

/// Wraps a Rust result so that the event loop's thread converts it.
pub fn outcome<T, E>(result: Result<T, E>) -> Outcome
where
    T: for<'py> IntoPyObject<'py> + Send + 'static,
    E: Into<PyErr> + Send + 'static,
{
    Box::new(move |py| match result {
        Ok(value) => value.into_py_any(py),
        Err(err) => Err(err.into()),
    })
}
