//! `Box`: the low-level handle of one box (start, stop, exec, metrics, copy in and out).

use std::path::PathBuf;
use std::sync::Arc;

use boxlite_engine::options::{check_max_output_bytes, timeout_from_secs};
use boxlite_engine::{ExecSpec, Execution, LiteBox};
use pyo3::prelude::*;

use crate::bridge::{self, Completer};
use crate::errors::{engine, to_py};
use crate::execution::{PyExecOutput, PyExecution};

/// A box (the low-level handle).
#[pyclass(name = "Box", module = "boxlite._engine", frozen)]
pub(crate) struct PyLiteBox {
    pub(crate) inner: Arc<LiteBox>,
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
