//! `boxlite._engine`: thin PyO3 bindings over the engine. Options arrive as JSON (validated by
//! the engine), async methods return asyncio awaitables (pyo3-async-runtimes on tokio), and
//! engine errors become the exception classes of `boxlite.errors`.

use std::sync::Arc;

use boxlite_engine::{
    BoxOptions, Error, ExecOutput, ExecSpec, Execution, LiteBox, Runtime, RuntimeOptions,
};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use pyo3_async_runtimes::tokio::future_into_py;

/// The `boxlite.errors` class for each kind of engine error.
fn error_class(err: &Error) -> &'static str {
    match err {
        Error::QemuNotFound { .. } => "QemuNotFoundError",
        Error::Accelerator(_) => "AcceleratorError",
        Error::GuestAssets(_) => "GuestAssetsError",
        Error::Image { .. } => "ImageError",
        Error::NotOciLayout { .. } => "InvalidImageError",
        Error::InvalidOption(_) => "InvalidOptionError",
        Error::BoxNotFound(_) => "BoxNotFoundError",
        Error::BoxNotRunning { .. } => "BoxStoppedError",
        Error::BootFailed { .. } => "BoxStartError",
        Error::BoxDied { .. } => "BoxDiedError",
        Error::Channel { .. } => "ChannelError",
        Error::Disk(_) => "DiskError",
        Error::Io { .. } => "BoxliteError",
    }
}

fn to_py(err: Error) -> PyErr {
    Python::attach(|py| {
        let message = err.to_string();
        match py
            .import("boxlite.errors")
            .and_then(|m| m.getattr(error_class(&err)))
        {
            Ok(class) => match class.call1((message.clone(),)) {
                Ok(instance) => PyErr::from_value(instance),
                Err(e) => e,
            },
            Err(_) => PyRuntimeError::new_err(message),
        }
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, json: &str) -> PyResult<T> {
    serde_json::from_str(json).map_err(|e| to_py(Error::InvalidOption(format!("{what}: {e}"))))
}

/// A BoxLite runtime: one home directory and its boxes.
#[pyclass(name = "Runtime", module = "boxlite._engine", frozen)]
struct PyRuntime {
    inner: Arc<Runtime>,
}

#[pymethods]
impl PyRuntime {
    #[new]
    fn new(options_json: &str) -> PyResult<Self> {
        let options: RuntimeOptions = parse_json("runtime options", options_json)?;
        Ok(PyRuntime {
            inner: Arc::new(Runtime::new(options).map_err(to_py)?),
        })
    }

    #[getter]
    fn home(&self) -> String {
        self.inner.home().display().to_string()
    }

    /// Creates and starts a box; resolves to a `Box`.
    fn create<'py>(&self, py: Python<'py>, options_json: &str) -> PyResult<Bound<'py, PyAny>> {
        let options: BoxOptions = parse_json("box options", options_json)?;
        let runtime = self.inner.clone();
        future_into_py(py, async move {
            let litebox = runtime.create(options).await.map_err(to_py)?;
            Ok(PyLiteBox { inner: litebox })
        })
    }

    /// The box with this id or name.
    fn get(&self, id_or_name: &str) -> PyResult<PyLiteBox> {
        Ok(PyLiteBox {
            inner: self.inner.get(id_or_name).map_err(to_py)?,
        })
    }

    /// JSON list of box infos.
    fn list_info(&self) -> String {
        serde_json::to_string(&self.inner.list_info()).expect("infos serialise")
    }

    fn remove<'py>(
        &self,
        py: Python<'py>,
        id_or_name: String,
        force: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let runtime = self.inner.clone();
        future_into_py(py, async move {
            runtime.remove(&id_or_name, force).await.map_err(to_py)
        })
    }

    /// Resolves to JSON `{"accel": ..., "reason": ...}`.
    fn accelerator<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let runtime = self.inner.clone();
        future_into_py(py, async move {
            let choice = runtime.accelerator().await.map_err(to_py)?;
            Ok(serde_json::to_string(&choice).expect("choice serialises"))
        })
    }

    /// Boots kernel and agent alone; resolves to milliseconds from launch to the agent's hello.
    fn bare_boot_ms<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let runtime = self.inner.clone();
        future_into_py(py, async move {
            Ok(runtime.bare_boot().await.map_err(to_py)?.as_secs_f64() * 1000.0)
        })
    }

    /// Stops every running box.
    fn shutdown<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let runtime = self.inner.clone();
        future_into_py(py, async move {
            runtime.shutdown().await;
            Ok(())
        })
    }

    /// Stops every running box, blocking the calling thread (for interpreter exit, where no
    /// event loop may be running). Waits at most `timeout` seconds, then kills what is left.
    fn shutdown_blocking(&self, py: Python<'_>, timeout: f64) {
        let runtime = self.inner.clone();
        py.detach(|| {
            let rt = pyo3_async_runtimes::tokio::get_runtime();
            let stopped = rt.block_on(async {
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

    fn start<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let litebox = self.inner.clone();
        future_into_py(py, async move { litebox.start().await.map_err(to_py) })
    }

    fn stop<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let litebox = self.inner.clone();
        future_into_py(py, async move { litebox.stop().await.map_err(to_py) })
    }

    /// Starts a process; resolves to an `Execution`.
    #[pyo3(signature = (program, args, env, working_dir=None, user=None, stdin=false))]
    #[allow(clippy::too_many_arguments)] // mirrors the Python signature one to one
    fn exec<'py>(
        &self,
        py: Python<'py>,
        program: String,
        args: Vec<String>,
        env: Vec<(String, String)>,
        working_dir: Option<String>,
        user: Option<String>,
        stdin: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let litebox = self.inner.clone();
        let spec = ExecSpec {
            program,
            args,
            env,
            working_dir,
            user,
            stdin,
        };
        future_into_py(py, async move {
            let execution = litebox.exec(spec).await.map_err(to_py)?;
            Ok(PyExecution {
                inner: Arc::new(execution),
            })
        })
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

    /// Resolves to an `ExecOutput` once the process ended.
    fn wait<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let execution = self.inner.clone();
        future_into_py(py, async move {
            Ok(PyExecOutput(execution.wait().await.map_err(to_py)?))
        })
    }

    fn kill<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let execution = self.inner.clone();
        future_into_py(py, async move { execution.kill().await.map_err(to_py) })
    }

    fn signal<'py>(&self, py: Python<'py>, signal: i32) -> PyResult<Bound<'py, PyAny>> {
        let execution = self.inner.clone();
        future_into_py(
            py,
            async move { execution.signal(signal).await.map_err(to_py) },
        )
    }

    fn write_stdin<'py>(&self, py: Python<'py>, data: Vec<u8>) -> PyResult<Bound<'py, PyAny>> {
        let execution = self.inner.clone();
        future_into_py(py, async move {
            execution.write_stdin(data).await.map_err(to_py)
        })
    }

    fn close_stdin<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let execution = self.inner.clone();
        future_into_py(
            py,
            async move { execution.close_stdin().await.map_err(to_py) },
        )
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
    m.add("PROTOCOL_VERSION", boxlite_protocol::PROTOCOL_VERSION)?;
    Ok(())
}
