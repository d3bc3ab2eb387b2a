//! The stdin pump of an execution: writes the host's input to the process and acknowledges
//! what it took, so the host never sends more than the guest can hold.

use std::io::Write;
use std::sync::mpsc;

use boxlite_protocol::GuestMessage;

use super::Executions;

pub(super) enum StdinOp {
    Data(Vec<u8>),
    Close,
}

impl Executions {
    /// Writes the host's input to the process, acknowledging what it took.
    pub(super) fn pump_stdin(
        &self,
        exec_id: u32,
        mut stdin: std::fs::File,
        rx: mpsc::Receiver<StdinOp>,
        is_tty: bool,
    ) {
        while let Ok(op) = rx.recv() {
            match op {
                StdinOp::Data(data) => {
                    if stdin.write_all(&data).is_err() {
                        break;
                    }
                    self.send(GuestMessage::StdinAck {
                        exec_id,
                        bytes: data.len() as u64,
                    });
                }
                StdinOp::Close => {
                    // Closing a terminal's master would hang it up: send end-of-file (^D).
                    if is_tty {
                        let _ = stdin.write_all(b"\x04");
                    }
                    break;
                }
            }
        }
    }
}
