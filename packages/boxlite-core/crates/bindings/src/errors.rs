//! Engine errors on their way to Python: the `boxlite.errors` class for each [`ErrorKind`]
//! (one table, looked up once per process), and the conversions every binding uses to raise
//! them (`to_py`, `engine` for an asynchronous call's outcome, `parse_json` for options).

use std::collections::HashMap;

use boxlite_engine::{Error, ErrorKind};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::bridge::{self, outcome};

/// The `boxlite.errors` class for each kind of engine error.
fn error_class(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::QemuNotFound => "QemuNotFoundError",
        ErrorKind::PasstNotFound => "PasstNotFoundError",
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
        ErrorKind::Snapshot => "SnapshotError",
        ErrorKind::SnapshotNotFound => "SnapshotNotFoundError",
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

pub(crate) fn to_py(err: Error) -> PyErr {
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

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(what: &str, json: &str) -> PyResult<T> {
    serde_json::from_str(json).map_err(|e| to_py(Error::InvalidOption(format!("{what}: {e}"))))
}

/// The outcome of an engine call, converted on the event loop's thread.
pub(crate) fn engine<T>(result: Result<T, Error>) -> bridge::Outcome
where
    T: for<'py> IntoPyObject<'py> + Send + 'static,
{
    outcome(result.map_err(EngineError))
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
