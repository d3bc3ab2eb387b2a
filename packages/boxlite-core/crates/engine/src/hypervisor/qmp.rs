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

/// How long QEMU may take over one exchange (the greeting, or a command and its answer);
/// a command known to take longer gets its own ([`QmpClient::execute_within`]), and a
/// migration is polled ([`QmpClient::wait_for_migration`]) rather than awaited in one answer.
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
    #[error("the VMM's migration {status}: {reason}")]
    Migration { status: String, reason: String },
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

    /// Runs `command` (with `arguments`) and returns its `return` value, within the client's
    /// deadline.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let deadline = self.deadline;
        self.execute_within(command, arguments, deadline).await
    }

    /// Runs `command` as [`QmpClient::execute`] does, within `deadline` instead of the
    /// client's own (for commands known to take longer).
    pub async fn execute_within(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        deadline: Duration,
    ) -> Result<Value, QmpError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = json!({ "execute": command, "id": id });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let mut line = serde_json::to_vec(&request).expect("json");
        line.push(b'\n');
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

    /// Turns migration capabilities on or off (QMP `migrate-set-capabilities`), e.g.
    /// `mapped-ram`, which both ends of a migration through a file must agree on.
    pub async fn set_migration_capabilities(
        &mut self,
        capabilities: &[(&str, bool)],
    ) -> Result<(), QmpError> {
        let list: Vec<Value> = capabilities
            .iter()
            .map(|(name, on)| json!({ "capability": name, "state": on }))
            .collect();
        self.execute(
            "migrate-set-capabilities",
            Some(json!({ "capabilities": list })),
        )
        .await
        .map(|_| ())
    }

    /// Starts saving the VM's device and memory state into the file at `path` (QMP `migrate`
    /// on a file channel). It runs in the background: see [`QmpClient::wait_for_migration`].
    /// Unthrottled: QEMU's default bandwidth limit (128 MiB/s, for networks) would keep a
    /// stopped VM paused about 8 s per GiB of touched memory (2.5 s instead of 0.66 s for one
    /// with 300 MiB measured under TCG).
    pub async fn migrate_to_file(&mut self, path: &Path) -> Result<(), QmpError> {
        self.execute(
            "migrate-set-parameters",
            Some(json!({ "max-bandwidth": UNTHROTTLED })),
        )
        .await?;
        self.execute("migrate", Some(json!({ "channels": [file_channel(path)] })))
            .await
            .map(|_| ())
    }

    /// Starts loading the VM's state from the file at `path` into a VMM started with
    /// `-incoming defer` (QMP `migrate-incoming`). See [`QmpClient::wait_for_migration`].
    pub async fn migrate_incoming_from_file(&mut self, path: &Path) -> Result<(), QmpError> {
        self.execute(
            "migrate-incoming",
            Some(json!({ "channels": [file_channel(path)] })),
        )
        .await
        .map(|_| ())
    }

    /// The migration's status (QMP `query-migrate`): `None` before any migration, else its
    /// `status` (`active`, `completed`, `failed`, ...) and QEMU's `error-desc`, if any.
    pub async fn migration_status(&mut self) -> Result<Option<(String, Option<String>)>, QmpError> {
        let answer = self.execute("query-migrate", None).await?;
        let Some(status) = answer.get("status") else {
            return Ok(None);
        };
        let status = status.as_str().ok_or_else(|| {
            QmpError::Protocol(format!(
                "query-migrate with a status that is not a string: {}",
                clip(&answer.to_string())
            ))
        })?;
        let error = answer.get("error-desc").and_then(Value::as_str).map(clip);
        Ok(Some((clip(status), error)))
    }

    /// Polls [`QmpClient::migration_status`] every `every` until the migration completed
    /// (`Ok`), failed or was cancelled ([`QmpError::Migration`] with QEMU's reason), or
    /// `within` has passed ([`QmpError::TimedOut`]).
    pub async fn wait_for_migration(
        &mut self,
        within: Duration,
        every: Duration,
    ) -> Result<(), QmpError> {
        let end = tokio::time::Instant::now() + within;
        loop {
            match self.migration_status().await? {
                Some((status, _)) if status == "completed" => return Ok(()),
                Some((status, error)) if status == "failed" || status == "cancelled" => {
                    return Err(QmpError::Migration {
                        status,
                        reason: error.unwrap_or_else(|| "no reason given".into()),
                    })
                }
                _ => {}
            }
            if tokio::time::Instant::now() + every > end {
                return Err(QmpError::TimedOut {
                    what: "with a completed migration".into(),
                    after: within,
                });
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Starts copying the disk `device` as it is at this moment into the qcow2 file at
    /// `target` (opened without its backing file, which it shares with the disk), in the
    /// background while the guest runs on: QMP `blockdev-add` and `blockdev-backup` with
    /// `sync: top` (the disk's own layer; copy-before-write keeps the moment). One at a time
    /// per VMM, named [`DISK_BACKUP`]; see [`QmpClient::disk_backup_status`].
    /// The disk is activated first (QMP `blockdev-set-active`, QEMU 10.0 and later): a
    /// migration that completed leaves it inactive, handed over, until the vCPUs run again.
    pub async fn start_disk_backup(&mut self, device: &str, target: &Path) -> Result<(), QmpError> {
        self.execute("blockdev-set-active", Some(json!({ "active": true })))
            .await?;
        self.execute(
            "blockdev-add",
            Some(json!({
                "driver": "qcow2",
                "node-name": DISK_BACKUP,
                "backing": null,
                "file": { "driver": "file", "filename": target.display().to_string() },
            })),
        )
        .await?;
        let started = self
            .execute(
                "blockdev-backup",
                Some(json!({
                    "job-id": DISK_BACKUP,
                    "device": device,
                    "target": DISK_BACKUP,
                    "sync": "top",
                    "auto-dismiss": false,
                })),
            )
            .await;
        if started.is_err() {
            let _ = self
                .execute("blockdev-del", Some(json!({ "node-name": DISK_BACKUP })))
                .await;
        }
        started.map(|_| ())
    }

    /// The disk backup's outcome once it has concluded (`Some(Err(QEMU's reason))` when it
    /// failed), `None` while it runs (QMP `query-jobs`).
    pub async fn disk_backup_status(&mut self) -> Result<Option<Result<(), String>>, QmpError> {
        let jobs = self.execute("query-jobs", None).await?;
        let job = jobs
            .as_array()
            .and_then(|jobs| {
                jobs.iter()
                    .find(|j| j.get("id") == Some(&json!(DISK_BACKUP)))
            })
            .ok_or_else(|| QmpError::Protocol("the disk backup job is gone".into()))?;
        if job.get("status").and_then(Value::as_str) != Some("concluded") {
            return Ok(None);
        }
        Ok(Some(match job.get("error").and_then(Value::as_str) {
            Some(reason) => Err(clip(reason)),
            None => Ok(()),
        }))
    }

    /// Ends the disk backup: cancelled if it may still run (the caller does not know it
    /// `concluded`), then dismissed, its target closed.
    pub async fn end_disk_backup(&mut self, concluded: bool) -> Result<(), QmpError> {
        if !concluded && self.disk_backup_status().await?.is_none() {
            let _ = self
                .execute("job-cancel", Some(json!({ "id": DISK_BACKUP })))
                .await;
            for _ in 0..100 {
                if self.disk_backup_status().await?.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.execute("job-dismiss", Some(json!({ "id": DISK_BACKUP })))
            .await?;
        self.execute("blockdev-del", Some(json!({ "node-name": DISK_BACKUP })))
            .await
            .map(|_| ())
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

/// A migration's bandwidth limit that never limits (1 TiB/s).
const UNTHROTTLED: u64 = 1 << 40;

/// The node and job name of a disk backup ([`QmpClient::start_disk_backup`]).
pub const DISK_BACKUP: &str = "snapshot-disk";

/// A migration channel to or from the file at `path` (its state starts at offset 0).
fn file_channel(path: &Path) -> Value {
    json!({
        "channel-type": "main",
        "addr": { "transport": "file", "filename": path.display().to_string(), "offset": 0 },
    })
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
        if server.read_line(&mut line).await.unwrap() == 0 {
            return Value::Null;
        }
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

    #[tokio::test]
    async fn a_migration_to_a_file_is_polled_until_it_completes() {
        let (mut client, mut server) = connected().await;
        let serve = async {
            let caps = next_command(&mut server).await;
            assert_eq!(caps["execute"], "migrate-set-capabilities");
            assert_eq!(
                caps["arguments"]["capabilities"][0],
                json!({"capability": "mapped-ram", "state": true})
            );
            answer(
                &mut server,
                format!(r#"{{"return": {{}}, "id": {}}}"#, caps["id"]),
            )
            .await;
            let limit = next_command(&mut server).await;
            assert_eq!(limit["execute"], "migrate-set-parameters");
            assert_eq!(limit["arguments"]["max-bandwidth"], json!(UNTHROTTLED));
            answer(
                &mut server,
                format!(r#"{{"return": {{}}, "id": {}}}"#, limit["id"]),
            )
            .await;
            let migrate = next_command(&mut server).await;
            assert_eq!(migrate["execute"], "migrate");
            let channel = &migrate["arguments"]["channels"][0];
            assert_eq!(channel["addr"]["transport"], "file");
            assert_eq!(channel["addr"]["filename"], "/snap/a,b/state");
            answer(
                &mut server,
                format!(r#"{{"return": {{}}, "id": {}}}"#, migrate["id"]),
            )
            .await;
            for status in ["setup", "active", "completed"] {
                let query = next_command(&mut server).await;
                assert_eq!(query["execute"], "query-migrate");
                answer(
                    &mut server,
                    format!(
                        r#"{{"return": {{"status": "{status}"}}, "id": {}}}"#,
                        query["id"]
                    ),
                )
                .await;
            }
        };
        let (result, ()) = tokio::join!(
            async {
                client
                    .set_migration_capabilities(&[("mapped-ram", true)])
                    .await?;
                client.migrate_to_file(Path::new("/snap/a,b/state")).await?;
                client
                    .wait_for_migration(Duration::from_secs(5), Duration::from_millis(1))
                    .await
            },
            serve
        );
        result.unwrap();
    }

    #[tokio::test]
    async fn a_disk_backup_activates_the_disk_runs_reports_a_failure_with_qemus_reason_and_is_let_go(
    ) {
        let (mut client, mut server) = connected().await;
        let serve = async {
            let ok = |id: &Value| format!(r#"{{"return": {{}}, "id": {id}}}"#);
            let activate = next_command(&mut server).await;
            assert_eq!(activate["execute"], "blockdev-set-active");
            assert_eq!(activate["arguments"], json!({"active": true}));
            answer(&mut server, ok(&activate["id"])).await;
            let add = next_command(&mut server).await;
            assert_eq!(add["execute"], "blockdev-add");
            assert_eq!(
                add["arguments"]["backing"],
                Value::Null,
                "the backing stays closed"
            );
            assert_eq!(add["arguments"]["file"]["filename"], "/snapshot.disk.qcow2");
            answer(&mut server, ok(&add["id"])).await;
            let backup = next_command(&mut server).await;
            assert_eq!(backup["execute"], "blockdev-backup");
            assert_eq!(backup["arguments"]["device"], "root");
            assert_eq!(backup["arguments"]["sync"], "top");
            answer(&mut server, ok(&backup["id"])).await;
            for status in [
                r#""status": "running""#,
                r#""status": "concluded", "error": "No space left on device""#,
            ] {
                let query = next_command(&mut server).await;
                assert_eq!(query["execute"], "query-jobs");
                answer(
                    &mut server,
                    format!(
                        r#"{{"return": [{{"id": "{DISK_BACKUP}", "type": "backup", {status}}}], "id": {}}}"#,
                        query["id"]
                    ),
                )
                .await;
            }
            // Known to have concluded: dismissed and closed without asking again.
            let dismiss = next_command(&mut server).await;
            assert_eq!(dismiss["execute"], "job-dismiss");
            assert_eq!(dismiss["arguments"]["id"], DISK_BACKUP);
            answer(&mut server, ok(&dismiss["id"])).await;
            let close = next_command(&mut server).await;
            assert_eq!(close["execute"], "blockdev-del");
            assert_eq!(close["arguments"]["node-name"], DISK_BACKUP);
            answer(&mut server, ok(&close["id"])).await;
        };
        let (result, ()) = tokio::join!(
            async {
                client
                    .start_disk_backup("root", Path::new("/snapshot.disk.qcow2"))
                    .await?;
                let running = client.disk_backup_status().await?;
                let concluded = client.disk_backup_status().await?;
                client.end_disk_backup(true).await?;
                Ok::<_, QmpError>((running, concluded))
            },
            serve
        );
        let (running, concluded) = result.unwrap();
        assert_eq!(running, None);
        assert_eq!(concluded, Some(Err("No space left on device".into())));
    }

    #[tokio::test]
    async fn a_failed_migration_reports_qemus_reason() {
        let (mut client, mut server) = connected().await;
        let serve = async {
            let incoming = next_command(&mut server).await;
            assert_eq!(incoming["execute"], "migrate-incoming");
            assert_eq!(
                incoming["arguments"]["channels"][0]["addr"]["filename"],
                "/snap/state"
            );
            answer(
                &mut server,
                format!(r#"{{"return": {{}}, "id": {}}}"#, incoming["id"]),
            )
            .await;
            let query = next_command(&mut server).await;
            answer(
                &mut server,
                format!(
                    r#"{{"return": {{"status": "failed", "error-desc": "load of migration failed: Input/output error"}}, "id": {}}}"#,
                    query["id"]
                ),
            )
            .await;
        };
        let (result, ()) = tokio::join!(
            async {
                client
                    .migrate_incoming_from_file(Path::new("/snap/state"))
                    .await?;
                client
                    .wait_for_migration(Duration::from_secs(5), Duration::from_millis(1))
                    .await
            },
            serve
        );
        let err = result.unwrap_err();
        assert!(matches!(err, QmpError::Migration { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "the VMM's migration failed: load of migration failed: Input/output error"
        );
    }

    #[tokio::test]
    async fn a_migration_that_never_ends_hits_its_own_deadline() {
        let (mut client, mut server) = connected().await;
        let serve = async {
            loop {
                let query = next_command(&mut server).await;
                if query.is_null() {
                    return;
                }
                answer(
                    &mut server,
                    format!(
                        r#"{{"return": {{"status": "active"}}, "id": {}}}"#,
                        query["id"]
                    ),
                )
                .await;
            }
        };
        let wait = async {
            let result = client
                .wait_for_migration(Duration::from_millis(50), Duration::from_millis(5))
                .await;
            drop(client);
            result
        };
        let (result, ()) = tokio::join!(wait, serve);
        let err = result.unwrap_err().to_string();
        assert!(
            err.contains("did not answer with a completed migration within 0.05 s"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_long_command_gets_its_own_deadline() {
        let (mut client, mut server) = connected().await;
        client.deadline = Duration::from_millis(20);
        let serve = async {
            let cmd = next_command(&mut server).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            answer(
                &mut server,
                format!(r#"{{"return": {{}}, "id": {}}}"#, cmd["id"]),
            )
            .await;
        };
        let (result, ()) = tokio::join!(
            client.execute_within("slow", None, Duration::from_secs(5)),
            serve
        );
        result.unwrap();
    }

    #[test]
    fn the_socket_option_escapes_commas() {
        assert_eq!(
            qmp_argument(Path::new("/boxes/a,b/qmp.sock")),
            "unix:/boxes/a,,b/qmp.sock,server=on,wait=off"
        );
    }
}
