//! `boxlite._engine`: thin PyO3 bindings over the engine. Options arrive as JSON (validated by
//! the engine); asynchronous operations take a [`bridge::Completer`] and return a token whose
//! outcome the event loop collects (see `bridge.rs` and `boxlite/_bridge.py`); engine errors
//! become the exception classes of `boxlite.errors`.

mod bridge;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use boxlite_engine::image::registry::PullEvent;
use boxlite_engine::litebox::WriteOptions;
use boxlite_engine::options::{check_max_output_bytes, timeout_from_secs};
use boxlite_engine::{
    BoxOptions, Error, ErrorKind, ExecOutput, ExecSpec, Execution, LiteBox, Runtime, RuntimeOptions,
};
use boxlite_protocol::files::FileInfo;
use boxlite_protocol::OutputStream;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyBytes;

use bridge::{outcome, Completer};

/// The `boxlite.errors` class for each kind of engine error.
fn error_class(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::QemuNotFound => "QemuNotFoundError",
        ErrorKind::Accelerator => "AcceleratorError",
        ErrorKind::GuestAssets => "GuestAssetsError",
        ErrorKind::Image => "ImageError",
        ErrorKind::NotOciLayout => "InvalidImageError",
        ErrorKind::InvalidOption => "InvalidOptionError",
        ErrorKind::Conflict => "BoxliteConflictError",
        ErrorKind::BoxNotFound => "BoxNotFoundError",
        ErrorKind::BoxNotRunning => "BoxStoppedError",
        ErrorKind::BootFailed => "BoxStartError",
        ErrorKind::BoxDied => "BoxDiedError",
        ErrorKind::Channel => "ChannelError",
        ErrorKind::Disk => "DiskError",
        ErrorKind::Copy => "CopyError",
        ErrorKind::StdinClosed => "StdinClosedError",
        ErrorKind::FileNotFound => "BoxFileNotFoundError",
        ErrorKind::FileIsADirectory => "BoxIsADirectoryError",
        ErrorKind::FileNotADirectory => "BoxNotADirectoryError",
        ErrorKind::FilePermission => "BoxPermissionError",
        ErrorKind::FileExists => "BoxFileExistsError",
        ErrorKind::FileTooLarge => "BoxFileTooLargeError",
        ErrorKind::FileOther => "BoxFileError",
        ErrorKind::Io => "BoxliteError",
    }
}

/// The `boxlite.errors` classes by kind, looked up once per process (on the first error). A
/// kind whose class is missing raises `RuntimeError` with the engine's message.
static ERROR_CLASSES: PyOnceLock<HashMap<ErrorKind, Py<PyAny>>> = PyOnceLock::new();

fn error_classes(py: Python<'_>) -> PyResult<&'static HashMap<ErrorKind, Py<PyAny>>> {
    ERROR_CLASSES.get_or_try_init(py, || {
        let module = py.import("boxlite.errors")?;
        Ok(ErrorKind::ALL
            .into_iter()
            .filter_map(|kind| {
                let class = module.getattr(error_class(kind)).ok()?;
                Some((kind, class.unbind()))
            })
            .collect())
    })
}

/// An engine error on its way to Python.
struct EngineError(Error);

impl From<EngineError> for PyErr {
    fn from(err: EngineError) -> PyErr {
        to_py(err.0)
    }
}

fn to_py(err: Error) -> PyErr {
    Python::attach(|py| {
        let message = err.to_string();
        match error_classes(py).map(|classes| classes.get(&err.kind())) {
            Ok(Some(class)) => match class.bind(py).call1((message.clone(),)) {
                Ok(instance) => PyErr::from_value(instance),
                Err(e) => e,
            },
            _ => PyRuntimeError::new_err(message),
        }
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, json: &str) -> PyResult<T> {
    serde_json::from_str(json).map_err(|e| to_py(Error::InvalidOption(format!("{what}: {e}"))))
}

/// The outcome of an engine call, converted on the event loop's thread.
fn engine<T>(result: Result<T, Error>) -> bridge::Outcome
where
    T: for<'py> IntoPyObject<'py> + Send + 'static,
{
    outcome(result.map_err(EngineError))
}

/// A BoxLite runtime: one home directory and its boxes.
#[pyclass(name = "Runtime", module = "boxlite._engine", frozen)]
struct PyRuntime {
    inner: Arc<Runtime>,
}

#[pymethods]
impl PyRuntime {
    #[new]
    fn new(py: Python<'_>, options_json: &str) -> PyResult<Self> {
        let options: RuntimeOptions = parse_json("runtime options", options_json)?;
        let inner = Arc::new(Runtime::new(options).map_err(to_py)?);
        // Boxes whose owning process died are stopped, deleted or reattached before first use.
        let recovering = inner.clone();
        py.detach(|| bridge::runtime().block_on(recovering.recover_orphans()))
            .map_err(to_py)?;
        Ok(PyRuntime { inner })
    }

    #[getter]
    fn home(&self) -> String {
        self.inner.home().display().to_string()
    }

    /// Creates and starts a box; the outcome is a `Box`.
    fn create(&self, completer: &Completer, options_json: &str) -> PyResult<u64> {
        let options: BoxOptions = parse_json("box options", options_json)?;
        let runtime = self.inner.clone();
        Ok(completer.spawn(async move {
            engine(
                runtime
                    .create(options)
                    .await
                    .map(|inner| PyLiteBox { inner }),
            )
        }))
    }

    /// The box with this id or name (reattaching a stored one); the outcome is a `Box`.
    fn get(&self, completer: &Completer, id_or_name: String) -> u64 {
        let runtime = self.inner.clone();
        completer.spawn(async move {
            engine(
                runtime
                    .get(&id_or_name)
                    .await
                    .map(|inner| PyLiteBox { inner }),
            )
        })
    }

    /// JSON info of the box with this id or name, without taking it over.
    fn get_info(&self, id_or_name: &str) -> PyResult<String> {
        let info = self.inner.get_info(id_or_name).map_err(to_py)?;
        Ok(serde_json::to_string(&info).expect("info serialises"))
    }

    /// JSON of the runtime's totals.
    fn metrics(&self) -> String {
        serde_json::to_string(&self.inner.metrics()).expect("metrics serialise")
    }

    /// JSON list of box infos (every box of the home).
    fn list_info(&self) -> PyResult<String> {
        let infos = self.inner.list_info().map_err(to_py)?;
        Ok(serde_json::to_string(&infos).expect("infos serialise"))
    }

    fn remove(&self, completer: &Completer, id_or_name: String, force: bool) -> u64 {
        let runtime = self.inner.clone();
        completer.spawn(async move { engine(runtime.remove(&id_or_name, force).await) })
    }

    /// The outcome is JSON `{"accel": ..., "reason": ...}`.
    fn accelerator(&self, completer: &Completer) -> u64 {
        let runtime = self.inner.clone();
        completer.spawn(async move {
            engine(
                runtime
                    .accelerator()
                    .await
                    .map(|c| serde_json::to_string(&c).expect("choice serialises")),
            )
        })
    }

    /// Boots kernel and agent alone; the outcome is milliseconds from launch to the agent's hello.
    fn bare_boot_ms(&self, completer: &Completer) -> u64 {
        let runtime = self.inner.clone();
        completer.spawn(async move {
            engine(runtime.bare_boot().await.map(|d| d.as_secs_f64() * 1000.0))
        })
    }

    /// Starts pulling `reference`; the returned `Pull` yields progress events and the result.
    fn pull_image(&self, reference: String) -> PyPull {
        let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
        let (result_tx, result_rx) = tokio::sync::oneshot::channel();
        let runtime = self.inner.clone();
        bridge::runtime().spawn(async move {
            let result = runtime
                .images()
                .pull(&reference, Some(events_tx))
                .await
                .map(|record| serde_json::to_string(&record).expect("record serialises"));
            let _ = result_tx.send(result);
        });
        PyPull {
            events: Arc::new(tokio::sync::Mutex::new(events_rx)),
            result: Arc::new(tokio::sync::Mutex::new(Some(result_rx))),
        }
    }

    /// Imports a `docker save` archive; the outcome is the JSON list of imported images.
    #[pyo3(signature = (completer, path, reference=None))]
    fn import_image_archive(
        &self,
        completer: &Completer,
        path: String,
        reference: Option<String>,
    ) -> u64 {
        let runtime = self.inner.clone();
        completer.spawn(async move {
            let result = tokio::task::spawn_blocking(move || {
                runtime
                    .images()
                    .import_archive(std::path::Path::new(&path), reference.as_deref())
            })
            .await
            .expect("import does not panic");
            engine(result.map(|r| serde_json::to_string(&r).expect("records serialise")))
        })
    }

    /// JSON list of cached images.
    fn list_images(&self) -> PyResult<String> {
        let images = self.inner.images().list().map_err(to_py)?;
        Ok(serde_json::to_string(&images).expect("records serialise"))
    }

    /// Removes an image from the cache; the outcome is the JSON garbage-collection report.
    fn remove_image(&self, completer: &Completer, reference: String) -> u64 {
        let runtime = self.inner.clone();
        completer.spawn(async move {
            let result = tokio::task::spawn_blocking(move || {
                let keep = runtime.disks_in_use();
                runtime.images().remove(&reference, &keep)
            })
            .await
            .expect("remove does not panic");
            engine(result.map(|r| serde_json::to_string(&r).expect("report serialises")))
        })
    }

    /// Deletes unreferenced blobs and base disks; the outcome is the JSON report.
    fn collect_image_garbage(&self, completer: &Completer) -> u64 {
        let runtime = self.inner.clone();
        completer.spawn(async move {
            let result = tokio::task::spawn_blocking(move || {
                let keep = runtime.disks_in_use();
                runtime.images().collect_garbage(&keep)
            })
            .await
            .expect("garbage collection does not panic");
            engine(result.map(|r| serde_json::to_string(&r).expect("report serialises")))
        })
    }

    /// Stops every running box.
    fn shutdown(&self, completer: &Completer) -> u64 {
        let runtime = self.inner.clone();
        completer.spawn(async move {
            runtime.shutdown().await;
            engine(Ok(()))
        })
    }

    /// Stops every running box, blocking the calling thread (for interpreter exit, where no
    /// event loop may be running). Waits at most `timeout` seconds, then kills what is left.
    fn shutdown_blocking(&self, py: Python<'_>, timeout: f64) {
        let runtime = self.inner.clone();
        py.detach(|| {
            let stopped = bridge::runtime().block_on(async {
                tokio::time::timeout(
                    std::time::Duration::from_secs_f64(timeout),
                    runtime.shutdown(),
                )
                .await
            });
            if stopped.is_err() {
                runtime.kill_all();
            }
        });
    }
}

/// A box (the low-level handle).
#[pyclass(name = "Box", module = "boxlite._engine", frozen)]
struct PyLiteBox {
    inner: Arc<LiteBox>,
}

#[pymethods]
impl PyLiteBox {
    #[getter]
    fn id(&self) -> String {
        self.inner.id.clone()
    }

    #[getter]
    fn name(&self) -> Option<String> {
        self.inner.name.clone()
    }

    /// JSON snapshot of the box.
    fn info(&self) -> String {
        serde_json::to_string(&self.inner.info()).expect("info serialises")
    }

    fn start(&self, completer: &Completer) -> u64 {
        let litebox = self.inner.clone();
        completer.spawn(async move { engine(litebox.start().await) })
    }

    fn stop(&self, completer: &Completer) -> u64 {
        let litebox = self.inner.clone();
        completer.spawn(async move { engine(litebox.stop().await) })
    }

    /// Starts a process. The outcome is an `Execution`, or with `wait` (run to completion in
    /// one call) its `ExecOutput`.
    #[pyo3(signature = (completer, program, args, env, working_dir=None, user=None, stdin=false, timeout=None, tty=None, wait=false, max_output_bytes=None))]
    #[allow(clippy::too_many_arguments)] // mirrors the Python signature one to one
    fn exec(
        &self,
        completer: &Completer,
        program: String,
        args: Vec<String>,
        env: Vec<(String, String)>,
        working_dir: Option<String>,
        user: Option<String>,
        stdin: bool,
        timeout: Option<f64>,
        tty: Option<(u16, u16)>,
        wait: bool,
        max_output_bytes: Option<u64>,
    ) -> PyResult<u64> {
        let timeout = timeout.map(timeout_from_secs).transpose().map_err(to_py)?;
        let max_output_bytes = max_output_bytes
            .map(check_max_output_bytes)
            .transpose()
            .map_err(to_py)?;
        let litebox = self.inner.clone();
        let spec = ExecSpec {
            program,
            args,
            env,
            working_dir,
            user,
            stdin: stdin && !wait,
            timeout,
            tty,
            builtin: None,
            max_output_bytes,
        };
        if !wait {
            return Ok(completer.spawn(async move {
                engine(
                    litebox
                        .exec(spec)
                        .await
                        .map(|e| PyExecution { inner: Arc::new(e) }),
                )
            }));
        }
        Ok(completer.spawn(async move {
            let output = async {
                let execution = Arc::new(litebox.exec(spec).await?);
                // If the awaiting coroutine is cancelled this future is dropped mid-wait: the
                // guard then kills every process of the execution.
                let mut guard = KillOnDrop(Some(execution.clone()));
                let output = execution.wait().await;
                guard.0 = None;
                output
            };
            engine(output.await.map(PyExecOutput))
        }))
    }

    /// JSON of the box's metrics.
    fn metrics(&self, completer: &Completer) -> u64 {
        let litebox = self.inner.clone();
        completer.spawn(async move {
            engine(
                litebox
                    .metrics()
                    .await
                    .map(|m| serde_json::to_string(&m).expect("metrics serialise")),
            )
        })
    }

    fn copy_in(&self, completer: &Completer, host_path: PathBuf, guest_path: String) -> u64 {
        let litebox = self.inner.clone();
        completer.spawn(async move { engine(litebox.copy_in(&host_path, &guest_path).await) })
    }

    fn copy_out(&self, completer: &Completer, guest_path: String, host_path: PathBuf) -> u64 {
        let litebox = self.inner.clone();
        completer.spawn(async move { engine(litebox.copy_out(&guest_path, &host_path).await) })
    }

    /// The outcome is the file's content (`bytes`).
    fn read_file(
        &self,
        completer: &Completer,
        path: String,
        offset: u64,
        length: Option<u64>,
        max_bytes: u64,
    ) -> u64 {
        let litebox = self.inner.clone();
        completer.spawn(async move {
            let read = litebox.read_file(&path, offset, length, max_bytes).await;
            engine(read.map(ByteChunk))
        })
    }

    fn write_file(
        &self,
        completer: &Completer,
        path: String,
        data: Vec<u8>,
        mode: u32,
        parents: bool,
        exclusive: bool,
    ) -> u64 {
        let litebox = self.inner.clone();
        let options = WriteOptions {
            mode,
            parents,
            exclusive,
        };
        completer.spawn(async move { engine(litebox.write_file(&path, &data, options).await) })
    }

    /// The outcome is a JSON list of file descriptions.
    fn list_dir(&self, completer: &Completer, path: String) -> u64 {
        let litebox = self.inner.clone();
        completer.spawn(async move {
            engine(litebox.list_dir(&path).await.map(|infos| {
                let infos: Vec<_> = infos.iter().map(file_info_json).collect();
                serde_json::Value::from(infos).to_string()
            }))
        })
    }

    /// The outcome is one file description as JSON.
    fn stat(&self, completer: &Completer, path: String, follow_symlinks: bool) -> u64 {
        let litebox = self.inner.clone();
        completer.spawn(async move {
            engine(
                litebox
                    .stat(&path, follow_symlinks)
                    .await
                    .map(|info| file_info_json(&info).to_string()),
            )
        })
    }
}

/// A file description as the Python `FileInfo` takes it.
fn file_info_json(info: &FileInfo) -> serde_json::Value {
    serde_json::json!({
        "name": info.name,
        "kind": info.kind.name(),
        "size": info.size,
        "mode": info.mode,
        "uid": info.uid,
        "gid": info.gid,
        "mtime_ns": info.mtime_ns,
        "link_target": info.link_target,
    })
}

/// Output bytes handed to Python as `bytes` (a `Vec<u8>` would become a list of ints).
struct ByteChunk(Vec<u8>);

impl<'py> IntoPyObject<'py> for ByteChunk {
    type Target = PyBytes;
    type Output = Bound<'py, PyBytes>;
    type Error = std::convert::Infallible;

    fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
        Ok(PyBytes::new(py, &self.0))
    }
}

type PullResult = Result<String, Error>;

/// A pull in progress: its progress events, then its result (the image record as JSON).
#[pyclass(name = "Pull", module = "boxlite._engine", frozen)]
struct PyPull {
    events: Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<PullEvent>>>,
    result: Arc<tokio::sync::Mutex<Option<tokio::sync::oneshot::Receiver<PullResult>>>>,
}

#[pymethods]
impl PyPull {
    /// The outcome is the next progress event as JSON, or None once the pull has ended.
    fn next_event(&self, completer: &Completer) -> u64 {
        let events = self.events.clone();
        completer.spawn(async move {
            let event = events.lock().await.recv().await;
            engine(Ok(
                event.map(|e| serde_json::to_string(&e).expect("event serialises"))
            ))
        })
    }

    /// The outcome is the pulled image's record as JSON.
    fn result(&self, completer: &Completer) -> u64 {
        let result = self.result.clone();
        completer.spawn(async move {
            let receiver = result.lock().await.take();
            let outcome = match receiver {
                Some(rx) => rx.await.unwrap_or_else(|_| {
                    Err(Error::Image {
                        image: "?".into(),
                        reason: "the pull task ended without a result".into(),
                    })
                }),
                None => Err(Error::InvalidOption(
                    "the result of this pull was already taken".into(),
                )),
            };
            engine(outcome)
        })
    }
}

/// Kills an execution's processes when dropped (a cancelled `run`).
struct KillOnDrop(Option<Arc<Execution>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(execution) = self.0.take() {
            bridge::runtime().spawn(async move {
                let _ = execution.kill().await;
            });
        }
    }
}

/// A process started in a box.
#[pyclass(name = "Execution", module = "boxlite._engine", frozen)]
struct PyExecution {
    inner: Arc<Execution>,
}

#[pymethods]
impl PyExecution {
    #[getter]
    fn id(&self) -> u32 {
        self.inner.id()
    }

    /// The outcome is an `ExecOutput` once the process ended.
    fn wait(&self, completer: &Completer) -> u64 {
        let execution = self.inner.clone();
        completer.spawn(async move { engine(execution.wait().await.map(PyExecOutput)) })
    }

    fn kill(&self, completer: &Completer) -> u64 {
        let execution = self.inner.clone();
        completer.spawn(async move { engine(execution.kill().await) })
    }

    fn signal(&self, completer: &Completer, signal: i32) -> u64 {
        let execution = self.inner.clone();
        completer.spawn(async move { engine(execution.signal(signal).await) })
    }

    #[getter]
    fn tty(&self) -> bool {
        self.inner.is_tty()
    }

    /// The next output chunk of `stream` ("stdout" or "stderr"); `None` at the end.
    fn read_output(&self, completer: &Completer, stream: &str) -> PyResult<u64> {
        let stream = match stream {
            "stdout" => OutputStream::Stdout,
            "stderr" => OutputStream::Stderr,
            other => {
                return Err(to_py(Error::InvalidOption(format!(
                    "unknown stream {other:?}: use \"stdout\" or \"stderr\""
                ))))
            }
        };
        let execution = self.inner.clone();
        Ok(completer.spawn(async move {
            engine(
                execution
                    .read_output(stream)
                    .await
                    .map(|chunk| chunk.map(ByteChunk)),
            )
        }))
    }

    fn claim_stdin(&self) -> PyResult<()> {
        self.inner.claim_stdin().map_err(to_py)
    }

    fn resize_tty(&self, completer: &Completer, rows: u16, cols: u16) -> u64 {
        let execution = self.inner.clone();
        completer.spawn(async move { engine(execution.resize_tty(rows, cols).await) })
    }

    fn write_stdin(&self, completer: &Completer, data: Vec<u8>) -> u64 {
        let execution = self.inner.clone();
        completer.spawn(async move { engine(execution.write_stdin(data).await) })
    }

    fn close_stdin(&self, completer: &Completer) -> u64 {
        let execution = self.inner.clone();
        completer.spawn(async move { engine(execution.close_stdin().await) })
    }
}

/// How an execution ended, with its complete output.
#[pyclass(name = "ExecOutput", module = "boxlite._engine", frozen)]
struct PyExecOutput(ExecOutput);

#[pymethods]
impl PyExecOutput {
    #[getter]
    fn exit_code(&self) -> i32 {
        self.0.exit_code
    }

    #[getter]
    fn signal(&self) -> Option<i32> {
        self.0.signal
    }

    #[getter]
    fn stdout<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.0.stdout)
    }

    #[getter]
    fn stderr<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.0.stderr)
    }

    #[getter]
    fn timed_out(&self) -> bool {
        self.0.timed_out
    }

    /// Bytes of stdout / stderr dropped beyond the output limit.
    #[getter]
    fn stdout_dropped(&self) -> u64 {
        self.0.stdout_dropped
    }

    #[getter]
    fn stderr_dropped(&self) -> u64 {
        self.0.stderr_dropped
    }

    #[getter]
    fn error(&self) -> Option<String> {
        self.0.error.clone()
    }
}

/// Engine logs go to stderr through `tracing`, filtered by BOXLITE_LOG, else RUST_LOG
/// (default: warnings).
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("BOXLITE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

#[pymodule]
fn _engine(m: &Bound<'_, PyModule>) -> PyResult<()> {
    init_logging();
    m.add_class::<PyRuntime>()?;
    m.add_class::<PyLiteBox>()?;
    m.add_class::<PyExecution>()?;
    m.add_class::<PyExecOutput>()?;
    m.add_class::<PyPull>()?;
    m.add_class::<Completer>()?;
    m.add("PROTOCOL_VERSION", boxlite_protocol::PROTOCOL_VERSION)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table is built by name: a class missing from `boxlite.errors` would turn that kind
    /// into a plain `RuntimeError`.
    #[test]
    fn every_error_kind_names_a_class_of_boxlite_errors() {
        let errors = include_str!("../../../python/boxlite/errors.py");
        for kind in ErrorKind::ALL {
            let name = error_class(kind);
            assert!(
                errors.contains(&format!("\nclass {name}(")),
                "{name} ({kind:?}) is not a class of boxlite.errors"
            );
        }
    }
}
