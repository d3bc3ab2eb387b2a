//! The execution driver against a fake agent on a real unix socket (no VM): output reaches
//! `wait()` and stream readers and is acknowledged as it is consumed, stdin waits for the
//! agent's credit, a timeout kills and reports 124 (given at the start, or armed, disarmed
//! and re-armed with `set_deadline`), an unconfirmed kill and a guest sending beyond its
//! window get the channel declared broken, and a lost channel fails `wait()`.
//!
//! Each execution is built with [`Execution::start`] over a [`LiteBox`] that was never
//! started (it only names the box in errors); the fake agent is `crate::testing`'s.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use boxlite_protocol::{ExitStatus, GuestMessage, HostMessage, OutputStream, OUTPUT_WINDOW};

use super::state::ACK_BATCH;
use super::{Execution, KILL_CONFIRM_TIMEOUT, STDIN_CHUNK, TIMEOUT_EXIT_CODE};
use crate::agent::Deadlines;
use crate::assets::GuestAssets;
use crate::error::Error;
use crate::hypervisor::accel::AccelChoice;
use crate::hypervisor::{Accel, Hypervisor, VmHandle, VmSpec};
use crate::image::PreparedImage;
use crate::litebox::{LiteBox, Platform};
use crate::options::BoxOptions;
use crate::testing::{connect, started, Connected, FakeAgent};

/// Bytes of each stream `wait` keeps, unless a test says otherwise.
const LIMIT: usize = 16 << 20;

/// A bound on every wait in these tests: reaching it means the driver hung.
const HANG: Duration = Duration::from_secs(10);

/// The platform of a box that never boots.
struct NoHypervisor;

impl Hypervisor for NoHypervisor {
    fn name(&self) -> &'static str {
        "none"
    }

    fn check_available(&self) -> crate::error::Result<()> {
        Ok(())
    }

    fn launch(&self, _spec: &VmSpec) -> crate::error::Result<Box<dyn VmHandle>> {
        Err(Error::InvalidOption("unit tests boot no VM".into()))
    }
}

/// A box that was never started: executions use it only to name it in their errors.
fn unstarted_box() -> Arc<LiteBox> {
    let image = PreparedImage {
        reference: "test".into(),
        manifest_digest: String::new(),
        base_disk: PathBuf::new(),
        env: Vec::new(),
        working_dir: None,
        user: None,
        entrypoint: Vec::new(),
        cmd: Vec::new(),
    };
    let platform = Arc::new(Platform {
        hypervisor: Arc::new(NoHypervisor),
        assets: GuestAssets {
            kernel: PathBuf::new(),
            initrd: PathBuf::new(),
        },
        accel: AccelChoice {
            accel: Accel::Tcg,
            reason: "unit test".into(),
        },
        snapshots: Arc::new(
            crate::snapshot::SnapshotStore::open(
                &std::env::temp_dir().join(format!("boxlite-unit-{}", std::process::id())),
            )
            .unwrap(),
        ),
    });
    Arc::new(LiteBox::new(
        "test-box".into(),
        BoxOptions::default(),
        image,
        PathBuf::from("/nonexistent"),
        platform,
    ))
}

/// An execution started over the fake agent of `c` (which has received its `Exec`).
async fn execution(
    c: &mut Connected,
    stdin_open: bool,
    output_limit: usize,
    timeout: Option<Duration>,
) -> (u32, Arc<Execution>) {
    let started = started(c).await;
    let id = started.0;
    let exec = Execution::start(
        unstarted_box(),
        c.client.clone(),
        started,
        false,
        stdin_open,
        output_limit,
        timeout,
    );
    (id, Arc::new(exec))
}

async fn output(agent: &mut FakeAgent, exec_id: u32, stream: OutputStream, data: &[u8]) {
    agent
        .send(GuestMessage::Output {
            exec_id,
            stream,
            data: data.to_vec(),
        })
        .await;
}

async fn exited(agent: &mut FakeAgent, exec_id: u32, status: ExitStatus) {
    agent.send(GuestMessage::Exited { exec_id, status }).await;
}

/// The next frame from the host, or `None` if none comes within `within`.
async fn next_frame(agent: &mut FakeAgent, within: Duration) -> Option<HostMessage> {
    tokio::time::timeout(within, agent.receive()).await.ok()
}

/// A channel error naming `what`, for the box `unstarted_box` builds.
fn assert_channel_error(err: &Error, what: &str) {
    assert!(matches!(err, Error::Channel { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("test-box") && text.contains(what),
        "{text} (expected it to name {what:?})"
    );
}

#[tokio::test]
async fn output_and_the_exit_status_reach_wait() {
    let mut c = connect(Deadlines::default()).await;
    let (id, exec) = execution(&mut c, false, LIMIT, None).await;
    output(&mut c.agent, id, OutputStream::Stdout, b"hello ").await;
    output(&mut c.agent, id, OutputStream::Stderr, b"oops").await;
    output(&mut c.agent, id, OutputStream::Stdout, b"world").await;
    exited(&mut c.agent, id, ExitStatus::Code(3)).await;
    let out = tokio::time::timeout(HANG, exec.wait())
        .await
        .expect("wait() hung")
        .unwrap();
    assert_eq!(out.stdout, b"hello world");
    assert_eq!(out.stderr, b"oops");
    assert_eq!((out.exit_code, out.signal, out.timed_out), (3, None, false));
    assert!(!out.truncated() && out.error.is_none());
    // Waiting again gives the same result.
    assert_eq!(exec.wait().await.unwrap().stdout, b"hello world");
    assert!(c.client.closed().is_none());
}

#[tokio::test]
async fn output_beyond_the_limit_is_read_and_dropped() {
    let mut c = connect(Deadlines::default()).await;
    let (id, exec) = execution(&mut c, false, 10, None).await;
    output(&mut c.agent, id, OutputStream::Stdout, &[b'a'; 25]).await;
    exited(&mut c.agent, id, ExitStatus::Code(0)).await;
    let out = tokio::time::timeout(HANG, exec.wait())
        .await
        .expect("wait() hung")
        .unwrap();
    assert_eq!(out.stdout, [b'a'; 10]);
    assert_eq!((out.stdout_dropped, out.stderr_dropped), (15, 0));
    assert!(out.truncated());
}

#[tokio::test]
async fn a_stream_reader_gets_output_as_it_arrives_and_wait_leaves_that_stream_alone() {
    let mut c = connect(Deadlines::default()).await;
    let (id, exec) = execution(&mut c, false, LIMIT, None).await;
    let read = |exec: Arc<Execution>| async move {
        tokio::time::timeout(HANG, exec.read_output(OutputStream::Stdout))
            .await
            .expect("read_output() hung")
            .unwrap()
    };
    // The reader waits for output that has not come yet.
    let first = tokio::spawn(read(exec.clone()));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!first.is_finished());
    output(&mut c.agent, id, OutputStream::Stdout, b"one").await;
    assert_eq!(first.await.unwrap().as_deref(), Some(&b"one"[..]));
    output(&mut c.agent, id, OutputStream::Stdout, b"two").await;
    output(&mut c.agent, id, OutputStream::Stderr, b"err").await;
    exited(&mut c.agent, id, ExitStatus::Code(0)).await;
    assert_eq!(read(exec.clone()).await.as_deref(), Some(&b"two"[..]));
    assert_eq!(read(exec.clone()).await, None, "the end of the stream");
    let out = exec.wait().await.unwrap();
    assert!(
        out.stdout.is_empty(),
        "streamed output is not in wait()'s result"
    );
    assert_eq!(out.stderr, b"err");
}

#[tokio::test]
async fn consumed_output_is_acknowledged_and_a_guest_keeping_to_its_window_is_never_held_up() {
    let mut c = connect(Deadlines::default()).await;
    let (id, exec) = execution(&mut c, false, LIMIT, None).await;
    let total = 4 * OUTPUT_WINDOW;
    let mut agent = c.agent;
    // The fake agent sends as fast as its grant allows: the window plus what the host has
    // acknowledged, and checks that the host never acknowledges more than it was sent.
    let guest = tokio::spawn(async move {
        let (mut sent, mut granted, mut acks) = (0u64, OUTPUT_WINDOW, Vec::new());
        while sent < total {
            if sent < granted {
                let n = (granted - sent).min(boxlite_protocol::OUTPUT_CHUNK_LEN as u64);
                agent.output(id, n).await;
                sent += n;
                continue;
            }
            match next_frame(&mut agent, HANG).await {
                Some(HostMessage::OutputAck { exec_id, bytes }) if exec_id == id => {
                    acks.push(bytes);
                    granted += bytes;
                    assert!(
                        granted - OUTPUT_WINDOW <= sent,
                        "the host acknowledged more than it was sent"
                    );
                }
                other => panic!("expected an acknowledgement, got {other:?}"),
            }
        }
        exited(&mut agent, id, ExitStatus::Code(0)).await;
        // The agent is handed back: dropping it would close the channel.
        (acks, agent)
    });
    let mut read = 0u64;
    while let Some(chunk) = tokio::time::timeout(HANG, exec.read_output(OutputStream::Stdout))
        .await
        .expect("read_output() hung")
        .unwrap()
    {
        read += chunk.len() as u64;
    }
    assert_eq!(read, total);
    let (acks, _agent) = guest.await.unwrap();
    assert!(
        acks.iter().all(|&bytes| bytes >= ACK_BATCH),
        "acknowledged in batches: {acks:?}"
    );
    assert!(c.client.closed().is_none(), "{:?}", c.client.closed());
}

#[tokio::test]
async fn unread_output_is_not_acknowledged_and_output_beyond_the_window_breaks_the_channel() {
    let mut c = connect(Deadlines::default()).await;
    let (id, exec) = execution(&mut c, false, LIMIT, None).await;
    // A whole window nobody reads: the host grants nothing more.
    c.agent.output(id, OUTPUT_WINDOW).await;
    let frame = next_frame(&mut c.agent, Duration::from_millis(100)).await;
    assert!(frame.is_none(), "unread output was acknowledged: {frame:?}");
    assert!(c.client.closed().is_none());
    // One byte beyond the grant. (`wait()` comes after the channel closed: consuming the
    // window earlier would acknowledge it and make the byte legal.)
    c.agent.output(id, 1).await;
    let since = std::time::Instant::now();
    while c.client.closed().is_none() {
        assert!(since.elapsed() < HANG, "the channel stayed open");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let err = tokio::time::timeout(HANG, exec.wait())
        .await
        .expect("wait() hung")
        .unwrap_err();
    assert_channel_error(&err, "window");
    assert!(c.client.closed().is_some_and(|closed| closed.broken));
    let broken = c.broken.lock().unwrap().clone();
    assert_eq!(broken.len(), 1, "{broken:?}");
    assert!(broken[0].contains("window"), "{broken:?}");
}

#[tokio::test]
async fn a_dropped_execution_acknowledges_its_output_so_the_guest_is_never_stuck() {
    let mut c = connect(Deadlines::default()).await;
    let (id, exec) = execution(&mut c, false, LIMIT, None).await;
    c.agent.output(id, OUTPUT_WINDOW).await;
    // Until the driver has queued the whole window.
    let queued = || -> u64 {
        let state = exec.shared.state.lock().unwrap();
        state.queues.iter().flatten().map(|c| c.len() as u64).sum()
    };
    let since = std::time::Instant::now();
    while queued() < OUTPUT_WINDOW {
        assert!(since.elapsed() < HANG, "the output was not queued");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(exec);
    match next_frame(&mut c.agent, HANG).await {
        Some(HostMessage::OutputAck { bytes, .. }) => assert_eq!(bytes, OUTPUT_WINDOW),
        other => panic!("expected the queued output acknowledged, got {other:?}"),
    }
    // Output sent after the drop is acknowledged (and dropped) as it arrives.
    c.agent.output(id, OUTPUT_WINDOW).await;
    let mut acked = 0;
    while acked < OUTPUT_WINDOW {
        match next_frame(&mut c.agent, HANG).await {
            Some(HostMessage::OutputAck { bytes, .. }) => acked += bytes,
            other => panic!("expected an acknowledgement, got {other:?}"),
        }
    }
    assert_eq!(acked, OUTPUT_WINDOW);
    assert!(c.client.closed().is_none());
}

#[tokio::test]
async fn stdin_beyond_one_credit_window_waits_for_the_agents_acknowledgement() {
    let mut c = connect(Deadlines::default()).await;
    let (id, exec) = execution(&mut c, true, LIMIT, None).await;
    exec.claim_stdin().unwrap();
    let len = OUTPUT_WINDOW as usize + 1000;
    let writer = {
        let exec = exec.clone();
        tokio::spawn(async move { exec.write_stdin(vec![7; len]).await })
    };
    // One window's worth arrives, in chunks...
    let mut received = 0usize;
    while received < OUTPUT_WINDOW as usize {
        match next_frame(&mut c.agent, HANG).await {
            Some(HostMessage::Stdin { exec_id, data }) if exec_id == id => {
                assert!(data.len() <= STDIN_CHUNK);
                received += data.len();
            }
            other => panic!("expected stdin, got {other:?}"),
        }
    }
    assert_eq!(received, OUTPUT_WINDOW as usize);
    // ...and no more until the agent acknowledges it.
    let frame = next_frame(&mut c.agent, Duration::from_millis(200)).await;
    assert!(
        frame.is_none(),
        "stdin beyond the credit was sent: {frame:?}"
    );
    assert!(!writer.is_finished());
    c.agent
        .send(GuestMessage::StdinAck {
            exec_id: id,
            bytes: OUTPUT_WINDOW,
        })
        .await;
    match next_frame(&mut c.agent, HANG).await {
        Some(HostMessage::Stdin { data, .. }) => assert_eq!(data.len(), 1000),
        other => panic!("expected the rest of stdin, got {other:?}"),
    }
    tokio::time::timeout(HANG, writer)
        .await
        .expect("write_stdin() hung")
        .unwrap()
        .unwrap();
    exited(&mut c.agent, id, ExitStatus::Code(0)).await;
    assert_eq!(exec.wait().await.unwrap().exit_code, 0);
    // Stdin of an execution that ended is closed.
    let err = exec.write_stdin(b"late".to_vec()).await.unwrap_err();
    assert!(matches!(err, Error::StdinClosed(_)), "{err:?}");
}

#[tokio::test]
async fn a_timeout_kills_the_execution_and_reports_exit_code_124() {
    let mut c = connect(Deadlines::default()).await;
    let (id, exec) = execution(&mut c, false, LIMIT, Some(Duration::from_millis(50))).await;
    output(&mut c.agent, id, OutputStream::Stdout, b"partial").await;
    match next_frame(&mut c.agent, HANG).await {
        Some(HostMessage::KillTree { exec_id }) => assert_eq!(exec_id, id),
        other => panic!("expected the timeout's kill, got {other:?}"),
    }
    // The agent reports the exit once every process of the execution is dead.
    exited(&mut c.agent, id, ExitStatus::Signal(9)).await;
    let out = tokio::time::timeout(HANG, exec.wait())
        .await
        .expect("wait() hung")
        .unwrap();
    assert!(out.timed_out);
    assert_eq!(out.exit_code, TIMEOUT_EXIT_CODE);
    assert_eq!(out.exit_code, 124);
    assert_eq!(out.signal, Some(9));
    assert_eq!(out.stdout, b"partial");
    assert!(c.client.closed().is_none());
}

/// Liveness probes far apart, so that with the clock paused the only deadline is the kill's.
fn no_probes() -> Deadlines {
    Deadlines {
        heartbeat: Duration::from_secs(3600),
        ..Deadlines::default()
    }
}

/// The bound on waits while the clock is paused: well past the kill-confirm deadline, so
/// that a clock advanced to the next timer reaches that deadline first.
const PAUSED_HANG: Duration = Duration::from_secs(60);

/// `wait()` of an execution whose kill is never confirmed: the box is declared broken at the
/// kill-confirm deadline, `KILL_CONFIRM_TIMEOUT` after the kill (on the paused clock).
async fn assert_broken_at_the_kill_deadline(
    c: &Connected,
    exec: &Execution,
    kill_at: tokio::time::Instant,
) {
    let real = std::time::Instant::now();
    let err = tokio::time::timeout(PAUSED_HANG, exec.wait())
        .await
        .expect("wait() hung past the kill-confirm deadline")
        .unwrap_err();
    assert_channel_error(&err, "did not confirm a kill within 10 s");
    assert!(tokio::time::Instant::now() - kill_at >= KILL_CONFIRM_TIMEOUT);
    assert!(
        real.elapsed() < Duration::from_secs(1),
        "{:?}",
        real.elapsed()
    );
    assert!(c.client.closed().is_some_and(|closed| closed.broken));
    let broken = c.broken.lock().unwrap().clone();
    assert_eq!(broken.len(), 1, "{broken:?}");
    assert!(broken[0].contains("did not confirm a kill"), "{broken:?}");
}

#[tokio::test]
async fn a_kill_the_agent_never_confirms_declares_the_box_broken_at_the_deadline() {
    let mut c = connect(no_probes()).await;
    let (id, exec) = execution(&mut c, false, LIMIT, None).await;
    tokio::time::pause();
    let kill_at = tokio::time::Instant::now();
    exec.kill().await.unwrap();
    match next_frame(&mut c.agent, PAUSED_HANG).await {
        Some(HostMessage::KillTree { exec_id }) => assert_eq!(exec_id, id),
        other => panic!("expected the kill, got {other:?}"),
    }
    assert_broken_at_the_kill_deadline(&c, &exec, kill_at).await;
}

#[tokio::test]
async fn a_timeout_kill_the_agent_never_confirms_declares_the_box_broken() {
    let mut c = connect(no_probes()).await;
    let timeout = Duration::from_secs(1);
    // The timeout runs from a moment after this.
    let kill_at = tokio::time::Instant::now() + timeout;
    let (id, exec) = execution(&mut c, false, LIMIT, Some(timeout)).await;
    tokio::time::pause();
    match next_frame(&mut c.agent, PAUSED_HANG).await {
        Some(HostMessage::KillTree { exec_id }) => assert_eq!(exec_id, id),
        other => panic!("expected the timeout's kill, got {other:?}"),
    }
    assert_broken_at_the_kill_deadline(&c, &exec, kill_at).await;
}

#[tokio::test]
async fn a_timeout_that_runs_out_while_the_vm_is_paused_is_confirmed_after_resume() {
    let mut c = connect(no_probes()).await;
    let timeout = Duration::from_secs(1);
    let (id, exec) = execution(&mut c, false, LIMIT, Some(timeout)).await;
    tokio::time::pause();
    c.client.set_paused(true);
    // The timeout is host time: it fires during the pause (the kill is written to the socket).
    match next_frame(&mut c.agent, PAUSED_HANG).await {
        Some(HostMessage::KillTree { exec_id }) => assert_eq!(exec_id, id),
        other => panic!("expected the timeout's kill, got {other:?}"),
    }
    // Paused far past the kill-confirm deadline: the guest cannot confirm, and that is no failure.
    tokio::time::sleep(KILL_CONFIRM_TIMEOUT * 5).await;
    assert!(c.client.closed().is_none(), "{:?}", c.client.closed());
    // Resumed: the guest confirms within a fresh deadline, and the result says timed out.
    c.client.set_paused(false);
    tokio::time::sleep(KILL_CONFIRM_TIMEOUT / 2).await;
    exited(&mut c.agent, id, ExitStatus::Signal(9)).await;
    let output = tokio::time::timeout(PAUSED_HANG, exec.wait())
        .await
        .expect("wait() hung")
        .expect("the execution ended");
    assert!(output.timed_out);
    assert_eq!(output.exit_code, TIMEOUT_EXIT_CODE);
    assert!(c.client.closed().is_none(), "{:?}", c.client.closed());
}

#[tokio::test]
async fn a_channel_lost_mid_execution_fails_wait_with_a_clear_error() {
    let mut c = connect(Deadlines::default()).await;
    let (id, exec) = execution(&mut c, true, LIMIT, None).await;
    exec.claim_stdin().unwrap();
    output(&mut c.agent, id, OutputStream::Stdout, b"half of it").await;
    let reader = {
        let exec = exec.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                match exec.read_output(OutputStream::Stderr).await {
                    Ok(Some(chunk)) => got.extend(chunk),
                    Ok(None) => return Ok(got),
                    Err(e) => return Err(e),
                }
            }
        })
    };
    // The guest goes away (its VM died, its agent crashed) before the execution ended.
    drop(c.agent);
    let err = tokio::time::timeout(HANG, exec.wait())
        .await
        .expect("wait() hung on a lost channel")
        .unwrap_err();
    assert_channel_error(&err, "the guest closed the channel");
    let err = tokio::time::timeout(HANG, reader)
        .await
        .expect("read_output() hung on a lost channel")
        .unwrap()
        .unwrap_err();
    assert_channel_error(&err, "the guest closed the channel");
    let err = exec.write_stdin(b"more".to_vec()).await.unwrap_err();
    assert_channel_error(&err, "the guest closed the channel");
    // The VM ending is not the guest breaking the protocol.
    assert!(c.client.closed().is_some_and(|closed| !closed.broken));
    assert!(c.broken.lock().unwrap().is_empty());
}

mod deadline;
