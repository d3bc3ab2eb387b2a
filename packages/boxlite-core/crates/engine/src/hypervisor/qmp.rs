//! A small client of the QEMU Machine Protocol (QMP), the VMM's control channel: one unix
//! socket per box (`qmp.sock`, next to the agent's socket), served by QEMU
//! (`-qmp unix:PATH,server=on,wait=off`).
//!
//! The protocol is one JSON object a line: QEMU greets (`{"QMP": {...}}`), the client enters
//! command mode with `qmp_capabilities`, then each command (`{"execute": ..., "id": N}`) gets
//! one answer (`{"return": ..., "id": N}` or `{"error": {"class", "desc"}, "id": N}`);
//! asynchronous events (`{"event": ...}`) may come in between and are logged and skipped.
//!
//! QEMU runs confined but executes guest-controlled code, so its socket is untrusted input:
//! every line is size-bounded ([`MAX_QMP_LINE`]) and every exchange deadline-bounded; a
//! violation fails the call and the client is not used again.
//!
//! No crate is used: `qapi` (the maintained typed QMP crate) pulls in a large generated
//! schema for four commands; this client is the few lines they need.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// The longest line accepted from QEMU (its answers to our commands are a few hundred bytes).
pub const MAX_QMP_LINE: usize = 64 * 1024;

/// How long QEMU may take over one exchange (the greeting, or a command and its answer).
pub const QMP_DEADLINE: Duration = Duration::from_secs(5);

/// How many events may precede an answer before the server is considered misbehaving.
const MAX_EVENTS_PER_ANSWER: usize = 1024;

/// Why a QMP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot reach the VMM's control socket {path}: {source}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the VMM's control channel failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the VMM closed its control channel")]
    Closed,
    #[error("the VMM sent a control line over {limit} bytes")]
    Oversized { limit: usize },
    #[error("the VMM did not answer {what} within {} s", after.as_secs_f64())]
    TimedOut { what: String, after: Duration },
    #[error("the VMM broke the control protocol: {0}")]
    Protocol(String),
    #[error("the VMM refused `{command}`: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
}

/// A connected QMP client in command mode.
pub struct QmpClient<S = UnixStream> {
    stream: BufReader<S>,
    next_id: u64,
    deadline: Duration,
}

impl QmpClient<UnixStream> {
    /// Connects to the QMP socket at `path`, reads the greeting and enters command mode.
    pub async fn connect(path: &Path) -> Result<Self, QmpError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| QmpError::Connect {
                path: path.display().to_string(),
                source,
            })?;
        QmpClient::handshake(stream, QMP_DEADLINE).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> QmpClient<S> {
    /// Reads the greeting from `stream` and negotiates (`qmp_capabilities`), each exchange
    /// within `deadline`.
    pub async fn handshake(stream: S, deadline: Duration) -> Result<Self, QmpError> {
        let mut client = QmpClient {
            stream: BufReader::new(stream),
            next_id: 1,
            deadline,
        };
        let greeting = tokio::time::timeout(deadline, client.read_object())
            .await
            .map_err(|_| QmpError::TimedOut {
                what: "with its greeting".into(),
                after: deadline,
            })??;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!(
                "expected a greeting, got {}",
                clip(&greeting.to_string())
            )));
        }
        client.execute("qmp_capabilities", None).await?;
        Ok(client)
    }

    /// Runs `command` (with `arguments`) and returns its `return` value.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = json!({ "execute": command, "id": id });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let mut line = serde_json::to_vec(&request).expect("json");
        line.push(b'\n');
        let deadline = self.deadline;
        let exchange = async {
            self.stream.get_mut().write_all(&line).await?;
            self.stream.get_mut().flush().await?;
            for _ in 0..MAX_EVENTS_PER_ANSWER {
                let answer = self.read_object().await?;
                if let Some(event) = answer.get("event") {
                    tracing::debug!(event = %clip(&event.to_string()), "qmp event");
                    continue;
                }
                if answer.get("id") != Some(&json!(id)) {
                    return Err(QmpError::Protocol(format!(
                        "an answer to another command: {}",
                        clip(&answer.to_string())
                    )));
                }
                if let Some(value) = answer.get("return") {
                    return Ok(value.clone());
                }
                if let Some(error) = answer.get("error") {
                    let text = |key: &str| {
                        clip(error.get(key).and_then(Value::as_str).unwrap_or("unknown"))
                    };
                    return Err(QmpError::Command {
                        command: command.to_owned(),
                        class: text("class"),
                        desc: text("desc"),
                    });
                }
                return Err(QmpError::Protocol(format!(
                    "an answer with neither return nor error: {}",
                    clip(&answer.to_string())
                )));
            }
            Err(QmpError::Protocol(format!(
                "more than {MAX_EVENTS_PER_ANSWER} events before an answer"
            )))
        };
        tokio::time::timeout(deadline, exchange)
            .await
            .map_err(|_| QmpError::TimedOut {
                what: format!("`{command}`"),
                after: deadline,
            })?
    }

    /// Stops the vCPUs (QMP `stop`).
    pub async fn stop(&mut self) -> Result<(), QmpError> {
        self.execute("stop", None).await.map(|_| ())
    }

    /// Starts the vCPUs again (QMP `cont`).
    pub async fn cont(&mut self) -> Result<(), QmpError> {
        self.execute("cont", None).await.map(|_| ())
    }

    /// Whether the vCPUs run (QMP `query-status`).
    pub async fn running(&mut self) -> Result<bool, QmpError> {
        let status = self.execute("query-status", None).await?;
        status
            .get("running")
            .and_then(Value::as_bool)
            .ok_or_else(|| {
                QmpError::Protocol(format!(
                    "query-status without `running`: {}",
                    clip(&status.to_string())
                ))
            })
    }

    /// One line, parsed as a JSON object, at most [`MAX_QMP_LINE`] bytes.
    async fn read_object(&mut self) -> Result<Value, QmpError> {
        let mut line = Vec::new();
        let limit = MAX_QMP_LINE as u64 + 1;
        let n = (&mut self.stream)
            .take(limit)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Err(QmpError::Closed);
        }
        if line.last() != Some(&b'\n') {
            return if line.len() > MAX_QMP_LINE {
                Err(QmpError::Oversized {
                    limit: MAX_QMP_LINE,
                })
            } else {
                Err(QmpError::Closed)
            };
        }
        let value: Value = serde_json::from_slice(&line).map_err(|e| {
            QmpError::Protocol(format!(
                "not JSON ({e}): {}",
                clip(&String::from_utf8_lossy(&line))
            ))
        })?;
        if !value.is_object() {
            return Err(QmpError::Protocol(format!(
                "not a JSON object: {}",
                clip(&value.to_string())
            )));
        }
        Ok(value)
    }
}

/// At most 200 characters of what QEMU sent, for messages and logs.
fn clip(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

/// `PATH` as QEMU's `-qmp` option value (a unix socket server that does not wait for us).
pub fn qmp_argument(path: &Path) -> String {
    format!(
        "unix:{},server=on,wait=off",
        path.display().to_string().replace(',', ",,")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 8}}, "capabilities": ["oob"]}}"#;

    /// The server end: reads one command line and returns it parsed.
    async fn next_command(server: &mut BufReader<UnixStream>) -> Value {
        let mut line = String::new();
        server.read_line(&mut line).await.unwrap();
        serde_json::from_str(&line).unwrap()
    }

    async fn answer(server: &mut BufReader<UnixStream>, text: String) {
        server.get_mut().write_all(text.as_bytes()).await.unwrap();
        server.get_mut().write_all(b"\n").await.unwrap();
    }

    /// A client past its handshake, and the fake server's end.
    async fn connected() -> (QmpClient, BufReader<UnixStream>) {
        let (client, server) = UnixStream::pair().unwrap();
        let mut server = BufReader::new(server);
        let serve = async {
            answer(&mut server, GREETING.into()).await;
            let caps = next_command(&mut server).await;
            assert_eq!(caps["execute"], "qmp_capabilities");
            answer(
                &mut server,
                format!(r#"{{"return": {{}}, "id": {}}}"#, caps["id"]),
            )
            .await;
        };
        let (client, ()) =
            tokio::join!(QmpClient::handshake(client, Duration::from_secs(5)), serve);
        (client.unwrap(), server)
    }

    #[tokio::test]
    async fn greeting_then_a_command_and_its_answer_past_an_event() {
        let (mut client, mut server) = connected().await;
        let serve = async {
            let stop = next_command(&mut server).await;
            assert_eq!(stop["execute"], "stop");
            answer(
                &mut server,
                r#"{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}}"#.into(),
            )
            .await;
            answer(
                &mut server,
                format!(r#"{{"return": {{}}, "id": {}}}"#, stop["id"]),
            )
            .await;
            let query = next_command(&mut server).await;
            assert_eq!(query["execute"], "query-status");
            assert_ne!(query["id"], stop["id"]);
            answer(
                &mut server,
                format!(
                    r#"{{"return": {{"running": false, "status": "paused"}}, "id": {}}}"#,
                    query["id"]
                ),
            )
            .await;
        };
        let (result, ()) = tokio::join!(
            async {
                client.stop().await?;
                client.running().await
            },
            serve
        );
        assert!(!result.unwrap());
    }

    #[tokio::test]
    async fn an_error_answer_names_the_command_and_qemus_reason() {
        let (mut client, mut server) = connected().await;
        let serve = async {
            let cmd = next_command(&mut server).await;
            answer(
                &mut server,
                format!(
                    r#"{{"error": {{"class": "GenericError", "desc": "no such thing"}}, "id": {}}}"#,
                    cmd["id"]
                ),
            )
            .await;
        };
        let (result, ()) = tokio::join!(client.execute("frobnicate", None), serve);
        let err = result.unwrap_err().to_string();
        assert!(err.contains("`frobnicate`"), "{err}");
        assert!(err.contains("GenericError: no such thing"), "{err}");
    }

    #[tokio::test]
    async fn an_oversized_line_is_refused() {
        let (mut client, mut server) = connected().await;
        let serve = async {
            let _ = next_command(&mut server).await;
            let huge = format!(r#"{{"return": "{}"}}"#, "x".repeat(MAX_QMP_LINE + 10));
            // The client stops reading at the limit: the rest may never be read.
            let _ = server.get_mut().write_all(huge.as_bytes()).await;
        };
        let (result, ()) = tokio::join!(client.execute("stop", None), serve);
        assert!(
            matches!(result, Err(QmpError::Oversized { limit }) if limit == MAX_QMP_LINE),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_greeting_that_is_not_one_is_refused() {
        let (client, server) = UnixStream::pair().unwrap();
        let mut server = BufReader::new(server);
        answer(&mut server, r#"{"return": {}}"#.into()).await;
        let err = QmpClient::handshake(client, Duration::from_secs(5))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("expected a greeting"), "{err}");
    }

    #[tokio::test]
    async fn a_silent_server_hits_the_deadline() {
        let short = Duration::from_millis(200);
        let (client, _server) = UnixStream::pair().unwrap();
        let err = QmpClient::handshake(client, short).await.err().unwrap();
        assert!(
            matches!(&err, QmpError::TimedOut { after, .. } if *after == short),
            "{err:?}"
        );
        // And a command the server never answers.
        let (mut client, _server) = connected().await;
        client.deadline = short;
        let err = client.cont().await.unwrap_err().to_string();
        assert!(err.contains("did not answer `cont` within 0.2 s"), "{err}");
    }

    #[tokio::test]
    async fn a_closed_server_is_reported() {
        let (mut client, server) = connected().await;
        drop(server);
        let err = client.stop().await.unwrap_err();
        assert!(matches!(err, QmpError::Closed | QmpError::Io(_)), "{err:?}");
    }

    #[test]
    fn the_socket_option_escapes_commas() {
        assert_eq!(
            qmp_argument(Path::new("/boxes/a,b/qmp.sock")),
            "unix:/boxes/a,,b/qmp.sock,server=on,wait=off"
        );
    }
}
