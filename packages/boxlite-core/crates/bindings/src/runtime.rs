//! `Runtime`: one home directory and its boxes (create, get, list, remove), its images
//! (pull, import, list, remove, garbage collection) and its shutdown.

use std::sync::Arc;

use boxlite_engine::{BoxOptions, Runtime, RuntimeOptions};
use pyo3::prelude::*;

use crate::bridge::{self, Completer};
use crate::errors::{engine, parse_json, to_py};
use crate::litebox::PyLiteBox;
use crate::pull::PyPull;

/// A BoxLite runtime: one home directory and its boxes.
#[pyclass(name = "Runtime", module = "boxlite._engine", frozen)]
pub(crate) struct PyRuntime {
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

    /// Forks the running box `id_or_name` into `count` new running boxes; the outcome is a
    /// list of `Box`.
    fn fork(&self, completer: &Completer, id_or_name: String, count: u32) -> u64 {
        let runtime = self.inner.clone();
        completer.spawn(async move {
            engine(runtime.fork(&id_or_name, count).await.map(|forks| {
                forks
                    .into_iter()
                    .map(|inner| PyLiteBox { inner })
                    .collect::<Vec<_>>()
            }))
        })
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

    /// JSON list of the home's snapshots, oldest first.
    fn list_snapshots(&self) -> PyResult<String> {
        let list = self.inner.list_snapshots().map_err(to_py)?;
        Ok(serde_json::to_string(&list).expect("snapshots serialise"))
    }

    /// JSON info of the snapshot with this name or id.
    fn get_snapshot(&self, name_or_id: &str) -> PyResult<String> {
        let info = self.inner.get_snapshot(name_or_id).map_err(to_py)?;
        Ok(serde_json::to_string(&info).expect("snapshot info serialises"))
    }

    /// Deletes a snapshot (refused while a box restored from it exists).
    fn remove_snapshot(&self, name_or_id: &str) -> PyResult<()> {
        self.inner.remove_snapshot(name_or_id).map_err(to_py)
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

    /// Whether creating a box with these options would pull its image first (a registry
    /// reference the cache lacks).
    fn image_needs_pull(&self, options_json: &str) -> PyResult<bool> {
        let options: BoxOptions = parse_json("box options", options_json)?;
        self.inner
            .images()
            .needs_pull(options.image.as_deref(), options.rootfs_path.as_deref())
            .map_err(to_py)
    }

    /// Checks the options and builds (or finds cached) the base disk a box with them boots
    /// from, as `create` would; the outcome is JSON `{"base_disk": path, "built": bool}`. A
    /// registry image must be cached (pulled) first.
    fn prepare_image(&self, completer: &Completer, options_json: &str) -> PyResult<u64> {
        let options: BoxOptions = parse_json("box options", options_json)?;
        options.validate().map_err(to_py)?;
        let runtime = self.inner.clone();
        Ok(completer.spawn(async move {
            let result = tokio::task::spawn_blocking(move || {
                runtime.images().prepare_reporting(
                    options.image.as_deref(),
                    options.rootfs_path.as_deref(),
                    options.disk_size_gb,
                )
            })
            .await
            .expect("preparing an image does not panic");
            engine(result.map(|(prepared, built)| {
                serde_json::json!({"base_disk": prepared.base_disk, "built": built}).to_string()
            }))
        }))
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
