//! `Execution` (a process started in a box: waiting, signals, its output streams, stdin, the
//! terminal size) and `ExecOutput` (how it ended, with its output).

use std::sync::Arc;

use boxlite_engine::options::timeout_from_secs;
use boxlite_engine::{Error, ExecOutput, Execution};
use boxlite_protocol::OutputStream;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::bridge::Completer;
use crate::errors::{engine, to_py};

/// Output bytes handed to Python as `bytes` (a `Vec<u8>` would become a list of ints).
pub(crate) struct ByteChunk(pub(crate) Vec<u8>);

impl<'py> IntoPyObject<'py> for ByteChunk {
    type Target = PyBytes;
    type Output = Bound<'py, PyBytes>;
    type Error = std::convert::Infallible;

    fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
        Ok(PyBytes::new(py, &self.0))
    }
}

/// A process started in a box.
#[pyclass(name = "Execution", module = "boxlite._engine", frozen)]
pub(crate) struct PyExecution {
    pub(crate) inner: Arc<Execution>,
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

    /// From now, the execution's timeout is `seconds` (`None` disarms it); see
    /// `Execution::set_deadline`. `seconds` is checked as `exec`'s `timeout` is. Returns
    /// whether the execution was still running with its timeout not fired (`False`: it did
    /// nothing). It only records the deadline for the driver task, so it needs no completer.
    #[pyo3(signature = (seconds))]
    fn set_deadline(&self, seconds: Option<f64>) -> PyResult<bool> {
        let timeout = seconds.map(timeout_from_secs).transpose().map_err(to_py)?;
        Ok(self.inner.set_deadline(timeout))
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
pub(crate) struct PyExecOutput(pub(crate) ExecOutput);

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
