//! `boxlite._engine`: thin PyO3 bindings over the engine. Options arrive as JSON (validated by
//! the engine); asynchronous operations take a [`bridge::Completer`] and return a token whose
//! outcome the event loop collects (see `bridge.rs` and `boxlite/_bridge.py`); engine errors
//! become the exception classes of `boxlite.errors`.

mod bridge;
mod contract;
mod egress;
mod errors;
mod execution;
mod litebox;
mod logging;
mod pull;
mod runtime;

use pyo3::prelude::*;

use bridge::Completer;
use execution::{PyExecOutput, PyExecution};
use litebox::PyLiteBox;
use pull::PyPull;
use runtime::PyRuntime;

#[pymodule]
fn _engine(m: &Bound<'_, PyModule>) -> PyResult<()> {
    logging::init_logging();
    m.add_class::<PyRuntime>()?;
    m.add_class::<PyLiteBox>()?;
    m.add_class::<PyExecution>()?;
    m.add_class::<PyExecOutput>()?;
    m.add_class::<PyPull>()?;
    m.add_class::<Completer>()?;
    contract::register(m)?;
    egress::register(m)?;
    Ok(())
}
