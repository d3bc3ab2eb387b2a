//! The engine's contract figures, exported as constants of `boxlite._engine` so that Python
//! (`boxlite/contract.py`) reads them from their one definition instead of repeating them.

use boxlite_engine::litebox::{KILL_CONFIRM_TIMEOUT, TIMEOUT_EXIT_CODE};
use boxlite_engine::options::{COPY_OUT_MAX_BYTES_DEFAULT, MAX_OUTPUT_BYTES_DEFAULT};
use pyo3::prelude::*;

/// Adds the constants to the module `m`.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("PROTOCOL_VERSION", boxlite_protocol::PROTOCOL_VERSION)?;
    // Exit code of an execution killed by its timeout.
    m.add("TIMEOUT_EXIT_CODE", TIMEOUT_EXIT_CODE)?;
    // Exit codes of an execution that never started: program not found, or not executable.
    m.add(
        "EXIT_COMMAND_NOT_FOUND",
        boxlite_protocol::EXIT_COMMAND_NOT_FOUND,
    )?;
    m.add("EXIT_CANNOT_EXECUTE", boxlite_protocol::EXIT_CANNOT_EXECUTE)?;
    // Seconds the agent has to confirm a kill before its box is declared broken.
    m.add("KILL_CONFIRM_TIMEOUT", KILL_CONFIRM_TIMEOUT.as_secs_f64())?;
    // Bytes of each output stream a result keeps unless the box or the call says otherwise.
    m.add("MAX_OUTPUT_BYTES_DEFAULT", MAX_OUTPUT_BYTES_DEFAULT)?;
    // Bytes one copy_out may write on the host unless the box says otherwise.
    m.add("COPY_OUT_MAX_BYTES_DEFAULT", COPY_OUT_MAX_BYTES_DEFAULT)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// mypy reads `_engine.pyi`, not the module: each constant registered here is declared there.
    #[test]
    fn every_constant_is_declared_in_the_stub() {
        let source = include_str!("contract.rs");
        let stub = include_str!("../../../python/boxlite/_engine.pyi");
        let names: Vec<&str> = source
            .split("m.add(\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .collect();
        assert!(names.len() >= 5, "{names:?}");
        for name in names {
            assert!(
                stub.contains(&format!("\n{name}: ")),
                "{name} is not declared in _engine.pyi"
            );
        }
    }
}
