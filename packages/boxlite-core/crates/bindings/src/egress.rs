//! The detached egress supervisor (see `boxlite_engine::egress::detached`): the Python package
//! registers the command that runs it, and that command calls [`supervise_egress`].

use std::ffi::OsString;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// Registers the command line that runs a detached egress supervisor (the engine appends the
/// box's spec as the last argument); the first registration wins. Returns whether this one did.
#[pyfunction]
fn set_egress_supervisor_command(argv: Vec<String>) -> bool {
    boxlite_engine::egress::detached::set_supervisor_command(
        argv.into_iter().map(OsString::from).collect(),
    )
}

/// The body of a detached egress supervisor process: receives passt's seccomp listener on the
/// unix socket `socket_fd` and answers its trapped calls for the box `spec` describes, until
/// passt exits.
#[pyfunction]
fn supervise_egress(py: Python<'_>, socket_fd: i32, spec: &str) -> PyResult<()> {
    py.detach(|| boxlite_engine::egress::detached::run_inherited(socket_fd, spec))
        .map_err(PyRuntimeError::new_err)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(set_egress_supervisor_command, m)?)?;
    m.add_function(wrap_pyfunction!(supervise_egress, m)?)?;
    Ok(())
}
