//! `Box`: the low-level handle of one box (start, stop, exec, metrics, copy in and out).

use std::path::PathBuf;
use std::sync::Arc;

use boxlite_engine::litebox::WriteOptions;
use boxlite_engine::options::{check_max_output_bytes, timeout_from_secs};
use boxlite_engine::{ExecSpec, Execution, LiteBox};
use boxlite_protocol::files::FileInfo;
use pyo3::prelude::*;

use crate::bridge::{self, Completer};
use crate::errors::{engine, to_py};
use crate::execution::{ByteChunk, PyExecOutput, PyExecution};

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

    /// Starts the box; a hibernated box resumes its saved state, unless `discard_state`
    /// deletes it first (the box then boots from its disk).
    #[pyo3(signature = (completer, discard_state=false))]
    fn start(&self, completer: &Completer, discard_state: bool) -> u64 {
        let litebox = self.inner.clone();
        completer.spawn(async move {
            let started = async {
                if discard_state {
                    litebox.discard_hibernated_state().await?;
                }
                litebox.start().await
            };
            engine(started.await)
        })
    }

    /// Stops the box; with `keep_state` its whole state is saved first (hibernation).
    #[pyo3(signature = (completer, keep_state=false))]
    fn stop(&self, completer: &Completer, keep_state: bool) -> u64 {
        let litebox = self.inner.clone();
        completer.spawn(async move {
            if keep_state {
                return engine(litebox.hibernate().await);
            }
            engine(litebox.stop().await)
        })
    }

    /// Stops the box's vCPUs (QMP `stop`).
    fn pause(&self, completer: &Completer) -> u64 {
        let litebox = self.inner.clone();
        completer.spawn(async move { engine(litebox.pause().await) })
    }

    /// Runs the box's vCPUs again (QMP `cont`).
    fn resume(&self, completer: &Completer) -> u64 {
        let litebox = self.inner.clone();
        completer.spawn(async move { engine(litebox.resume().await) })
    }

    /// Saves the box's whole state as a snapshot; the outcome is its JSON info.
    #[pyo3(signature = (completer, name=None))]
    fn snapshot(&self, completer: &Completer, name: Option<String>) -> u64 {
        let litebox = self.inner.clone();
        completer.spawn(async move {
            engine(
                litebox
                    .snapshot(name)
                    .await
                    .map(|s| serde_json::to_string(&s).expect("snapshot info serialises")),
            )
        })
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
