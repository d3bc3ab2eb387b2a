//! The client against a fake agent on a real unix socket (no VM): a guest that breaks the
//! protocol or stops answering gets the channel declared broken.

use std::time::Duration;

use boxlite_protocol::{GuestMessage, HostMessage, MAX_GUEST_FRAME_LEN, OUTPUT_WINDOW};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::error::{clip, MAX_GUEST_TEXT};
use super::*;
use crate::testing::{connect, started};

/// Events until the channel ends the execution; panics after 10 s.
async fn drain(events: &mut mpsc::UnboundedReceiver<ExecEvent>) -> (u64, Option<String>) {
    let mut bytes = 0;
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("the execution did not end");
        match event {
            Some(ExecEvent::Output { data, .. }) => bytes += data.len() as u64,
            Some(ExecEvent::Lost(error)) => return (bytes, Some(error.to_string())),
            Some(ExecEvent::Exited(_)) => return (bytes, None),
            None => return (bytes, None),
            Some(_) => {}
        }
    }
}

#[tokio::test]
async fn output_beyond_the_window_breaks_the_channel() {
    let mut c = connect(Deadlines::default()).await;
    let (id, mut events) = started(&mut c).await;
    // A whole window, acknowledged, then another whole window: all within the grant.
    c.agent.output(id, OUTPUT_WINDOW).await;
    c.client.ack_output(id, OUTPUT_WINDOW).await.unwrap();
    assert!(matches!(
        c.agent.receive().await,
        HostMessage::OutputAck { bytes, .. } if bytes == OUTPUT_WINDOW
    ));
    c.agent.output(id, OUTPUT_WINDOW).await;
    assert!(c.client.closed().is_none(), "{:?}", c.client.closed());
    // One byte more than was granted.
    c.agent.output(id, 1).await;
    let (bytes, lost) = drain(&mut events).await;
    assert_eq!(
        bytes,
        2 * OUTPUT_WINDOW,
        "output beyond the window is not delivered"
    );
    let reason = lost.expect("the execution is lost");
    assert!(reason.contains("window"), "{reason}");
    let closed = c.client.closed().expect("closed");
    assert!(closed.broken);
    assert_eq!(c.broken.lock().unwrap().as_slice(), [reason]);
}

#[tokio::test]
async fn stdin_acknowledged_beyond_what_was_sent_breaks_the_channel() {
    let mut c = connect(Deadlines::default()).await;
    let (id, mut events) = started(&mut c).await;
    c.client.stdin(id, vec![0; 10]).await.unwrap();
    assert!(matches!(c.agent.receive().await, HostMessage::Stdin { .. }));
    c.agent
        .send(GuestMessage::StdinAck {
            exec_id: id,
            bytes: 10,
        })
        .await;
    c.agent
        .send(GuestMessage::StdinAck {
            exec_id: id,
            bytes: 1,
        })
        .await;
    let (_, lost) = drain(&mut events).await;
    assert!(lost.expect("lost").contains("stdin"));
    assert!(c.client.closed().is_some_and(|c| c.broken));
}

#[tokio::test]
async fn an_oversized_frame_breaks_the_channel_before_it_is_read() {
    let mut c = connect(Deadlines::default()).await;
    let (_, mut events) = started(&mut c).await;
    let prefix = (MAX_GUEST_FRAME_LEN as u32 + 1).to_le_bytes();
    c.agent.writer.write_all(&prefix).await.unwrap();
    let (_, lost) = drain(&mut events).await;
    assert!(lost.expect("lost").contains("limit"));
    assert_eq!(c.broken.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_guest_that_stops_reading_breaks_the_channel_at_the_write_deadline() {
    let deadlines = Deadlines {
        write: Duration::from_millis(300),
        ..Deadlines::default()
    };
    let mut c = connect(deadlines).await;
    let (id, mut events) = started(&mut c).await;
    // The fake agent reads nothing more: the socket's buffers fill, then a write stalls.
    let started = std::time::Instant::now();
    let mut failure = None;
    for _ in 0..1000 {
        if let Err(e) = c.client.stdin(id, vec![0; 64 * 1024]).await {
            failure = Some(e);
            break;
        }
    }
    let failure = failure.expect("a write failed").to_string();
    assert!(failure.contains("did not read"), "{failure}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(drain(&mut events).await.1.is_some());
    assert_eq!(c.broken.lock().unwrap().len(), 1);
    // Later calls fail at once with the same reason.
    assert_eq!(
        c.client.kill_tree(id).await.unwrap_err().to_string(),
        failure
    );
}

#[tokio::test]
async fn a_silent_guest_breaks_the_channel_while_executions_are_open() {
    let deadlines = Deadlines {
        write: Duration::from_secs(10),
        answer: Duration::from_millis(300),
        heartbeat: Duration::from_millis(100),
    };
    let mut c = connect(deadlines).await;
    // Idle (no execution open): no probe, so a silent guest is left alone.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(c.client.closed().is_none());
    let (_, mut events) = started(&mut c).await;
    // The agent answers probes for a while...
    for _ in 0..3 {
        let probe = tokio::time::timeout(Duration::from_secs(10), c.agent.receive());
        match probe.await.expect("no liveness probe within 10 s") {
            HostMessage::Ping { token } => c.agent.send(GuestMessage::Pong { token }).await,
            other => panic!("expected a ping, got {other:?}"),
        }
    }
    assert!(c.client.closed().is_none());
    // ...then goes silent.
    let (_, lost) = drain(&mut events).await;
    let reason = lost.expect("lost");
    assert!(
        reason.contains("did not answer a liveness probe"),
        "{reason}"
    );
    assert_eq!(c.broken.lock().unwrap().as_slice(), [reason]);
}

#[tokio::test]
async fn a_paused_guest_is_not_probed_nor_declared_broken_for_its_silence() {
    let deadlines = Deadlines {
        write: Duration::from_secs(10),
        answer: Duration::from_millis(200),
        heartbeat: Duration::from_millis(50),
    };
    let mut c = connect(deadlines).await;
    let (_, _events) = started(&mut c).await;
    // A probe is sent while the VM runs, then the VM is paused before the guest answers.
    let token = match tokio::time::timeout(Duration::from_secs(10), c.agent.receive())
        .await
        .expect("no liveness probe within 10 s")
    {
        HostMessage::Ping { token } => token,
        other => panic!("expected a ping, got {other:?}"),
    };
    c.client.set_paused(true);
    assert!(c.client.paused());
    assert_eq!(c.client.pauses(), 1);
    // Paused for many answer deadlines and heartbeats: the channel stays open, and no
    // further probe is sent.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(c.client.closed().is_none(), "{:?}", c.client.closed());
    assert!(
        tokio::time::timeout(Duration::from_millis(10), c.agent.receive())
            .await
            .is_err(),
        "a paused guest was probed"
    );
    // Resumed: the pending probe gets a whole deadline again, and its answer counts.
    c.client.set_paused(false);
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.agent.send(GuestMessage::Pong { token }).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(c.client.closed().is_none(), "{:?}", c.client.closed());
    // Running and silent again: broken at the deadline, as before.
    let started = std::time::Instant::now();
    while c.client.closed().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never declared broken"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(c.client.closed().is_some_and(|closed| closed.broken));
}

#[tokio::test]
async fn a_metrics_request_nobody_answers_breaks_the_channel() {
    let deadlines = Deadlines {
        answer: Duration::from_millis(200),
        ..Deadlines::default()
    };
    let c = connect(deadlines).await;
    let err = c.client.metrics().await.unwrap_err().to_string();
    assert!(err.contains("metrics request"), "{err}");
    assert!(c.client.closed().is_some_and(|c| c.broken));
}

#[test]
fn error_messages_read_as_before_and_say_whether_the_guest_broke_the_channel() {
    let ten = Duration::from_secs(10);
    let cases = [
        (
            AgentError::WriteTimedOut { after: ten },
            "the guest did not read its channel for 10 s (is its VM paused or its agent stopped?)".to_owned(),
            true,
        ),
        (
            AgentError::AnswerTimedOut { request: "liveness probe", after: ten },
            "the guest agent did not answer a liveness probe within 10 s (is its VM paused or its agent stopped?)".to_owned(),
            true,
        ),
        (
            AgentError::KillNotConfirmed { after: ten },
            "the guest agent did not confirm a kill within 10 s".to_owned(),
            true,
        ),
        (
            AgentError::OutputBeyondWindow { exec_id: 3, ahead: 5 },
            format!("the guest sent 5 bytes of output of execution 3 ahead of the host's acknowledgements, more than the {OUTPUT_WINDOW}-byte window it was granted"),
            true,
        ),
        (
            AgentError::StdinOverAcknowledged { exec_id: 3, acked: 11, sent: 10 },
            "the guest acknowledged 11 bytes of stdin of execution 3, but only 10 were sent".to_owned(),
            true,
        ),
        (
            AgentError::WrongAnswer { request: "metrics request", answer: "pong" },
            "the guest agent answered a metrics request with a pong".to_owned(),
            false,
        ),
        (AgentError::GuestClosed, "the guest closed the channel".to_owned(), false),
        (AgentError::Closed, "the channel closed".to_owned(), false),
    ];
    for (error, message, broken) in cases {
        assert_eq!(error.to_string(), message);
        assert_eq!(error.breaks_channel(), broken, "{message}");
    }
}

#[test]
fn guest_text_is_clipped() {
    assert_eq!(clip("short".into()), "short");
    let long = clip("é".repeat(MAX_GUEST_TEXT));
    assert!(long.len() <= MAX_GUEST_TEXT + 3 && long.ends_with("..."));
}

mod handshake {
    //! The version handshake against a fake agent: a mismatch is refused, the host's hello
    //! carries its version and clock.

    use boxlite_protocol::{nonblocking, PROTOCOL_VERSION};
    use tokio::sync::watch;
    use tokio::time::Instant;

    use super::*;

    /// A fake agent on a unix socket: sends `hello`, then returns what the host answered.
    async fn handshake_with(
        hello: GuestMessage,
    ) -> (
        Result<(AgentClient, GuestHello), ConnectError>,
        Option<HostMessage>,
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("agent.sock");
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
        let guest = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let (mut reader, mut writer) = stream.into_split();
            nonblocking::write_message(&mut writer, &hello)
                .await
                .expect("send hello");
            nonblocking::read_message::<HostMessage, _>(&mut reader)
                .await
                .ok()
                .flatten()
        });
        let (_vm_tx, vm_exit) = watch::channel(None);
        let deadline = Instant::now() + Duration::from_secs(10);
        let connected = AgentClient::connect(&socket, deadline, vm_exit).await;
        // The host writes its hello before `connect` returns.
        let answer = if connected.is_ok() {
            guest.await.expect("fake agent")
        } else {
            guest.abort();
            None
        };
        (connected, answer)
    }

    #[tokio::test]
    async fn a_guest_speaking_another_protocol_version_is_refused() {
        let (connected, _) = handshake_with(GuestMessage::Hello {
            version: PROTOCOL_VERSION + 1,
            kernel_release: "6.12".into(),
            uptime_ms: 1,
        })
        .await;
        match connected {
            Err(ConnectError::Protocol(message)) => {
                assert!(
                    message.contains(&format!("protocol {}", PROTOCOL_VERSION + 1))
                        && message.contains("reinstall"),
                    "{message}"
                );
            }
            Err(other) => panic!("refused for another reason: {other:?}"),
            Ok(_) => panic!("a mismatched protocol version was accepted"),
        }
    }

    #[tokio::test]
    async fn the_host_answers_a_matching_hello_with_its_version_and_clock() {
        let (connected, answer) = handshake_with(GuestMessage::Hello {
            version: PROTOCOL_VERSION,
            kernel_release: "6.12".into(),
            uptime_ms: 1,
        })
        .await;
        let (_, hello) = connected.unwrap_or_else(|e| panic!("handshake failed: {e:?}"));
        assert_eq!(hello.kernel_release, "6.12");
        let Some(HostMessage::Hello {
            version,
            unix_time_ns,
            entropy,
        }) = answer
        else {
            panic!("the host did not answer with a hello: {answer:?}");
        };
        assert_eq!(version, PROTOCOL_VERSION);
        // The guest sets its clock from this: it must be the host's wall clock, now.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos() as u64;
        assert!(
            now.abs_diff(unix_time_ns) < 60_000_000_000,
            "host hello time {unix_time_ns} is not now ({now})"
        );
        // Fresh randomness for the guest's kernel: not all zeros, and new on every connection.
        assert_ne!(entropy, [[0u8; 32]; 2]);
        let (_, again) = handshake_with(GuestMessage::Hello {
            version: PROTOCOL_VERSION,
            kernel_release: "6.12".into(),
            uptime_ms: 1,
        })
        .await;
        let Some(HostMessage::Hello { entropy: other, .. }) = again else {
            panic!("the host did not answer the second connection with a hello: {again:?}");
        };
        assert_ne!(entropy, other, "two connections got the same randomness");
    }

    #[tokio::test]
    async fn a_restored_guest_is_asked_for_its_hello_before_it_says_it() {
        // A restored agent still reads the connection it had at the snapshot: it says hello
        // only when asked (HelloAgain), then gets the host's hello as usual.
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("agent.sock");
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
        let guest = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let (mut reader, mut writer) = stream.into_split();
            let first = nonblocking::read_message::<HostMessage, _>(&mut reader).await;
            assert!(
                matches!(first, Ok(Some(HostMessage::HelloAgain))),
                "{first:?}"
            );
            let hello = GuestMessage::Hello {
                version: PROTOCOL_VERSION,
                kernel_release: "6.12".into(),
                uptime_ms: 1,
            };
            nonblocking::write_message(&mut writer, &hello)
                .await
                .expect("send hello");
            nonblocking::read_message::<HostMessage, _>(&mut reader)
                .await
                .ok()
                .flatten()
        });
        let (_vm_tx, vm_exit) = watch::channel(None);
        let deadline = Instant::now() + Duration::from_secs(10);
        let connected = AgentClient::connect_restored(&socket, deadline, vm_exit).await;
        let (_, hello) = connected.unwrap_or_else(|e| panic!("handshake failed: {e:?}"));
        assert_eq!(hello.kernel_release, "6.12");
        let answer = guest.await.expect("fake agent");
        assert!(
            matches!(answer, Some(HostMessage::Hello { .. })),
            "{answer:?}"
        );
    }
}
