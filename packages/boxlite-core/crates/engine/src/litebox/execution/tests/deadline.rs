//! `set_deadline`: the timeout armed, disarmed and re-armed while the execution runs, on the
//! fake agent and helpers of `tests.rs`. Each deadline that fires goes the timeout's way (the
//! whole tree killed, 124); one disarmed, or set once the execution ended, never does.

use std::time::Duration;

use boxlite_protocol::{ExitStatus, HostMessage};

use super::{
    connect, execution, exited, next_frame, no_probes, Connected, Deadlines, Execution, HANG,
    LIMIT, PAUSED_HANG, TIMEOUT_EXIT_CODE,
};

/// The end of an execution killed by its timeout, once the agent confirms the kill.
async fn assert_timed_out(c: &mut Connected, id: u32, exec: &Execution) {
    exited(&mut c.agent, id, ExitStatus::Signal(9)).await;
    let out = tokio::time::timeout(PAUSED_HANG, exec.wait())
        .await
        .expect("wait() hung")
        .unwrap();
    assert!(out.timed_out);
    assert_eq!(out.exit_code, TIMEOUT_EXIT_CODE);
    assert_eq!(out.signal, Some(9));
    assert!(c.client.closed().is_none());
}

#[tokio::test]
async fn an_armed_deadline_kills_the_execution_and_reports_exit_code_124() {
    let mut c = connect(Deadlines::default()).await;
    // Started with a timeout of an hour: the deadline set later replaces it.
    let hour = Some(Duration::from_secs(3600));
    let (id, exec) = execution(&mut c, false, LIMIT, hour).await;
    // The driver is waiting for the hour by now.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(exec.set_deadline(Some(Duration::from_millis(50))));
    match next_frame(&mut c.agent, HANG).await {
        Some(HostMessage::KillTree { exec_id }) => assert_eq!(exec_id, id),
        other => panic!("expected the timeout's kill, got {other:?}"),
    }
    // Once the timeout fired, setting the deadline does nothing: no second kill.
    assert!(!exec.set_deadline(None));
    assert!(!exec.set_deadline(Some(Duration::from_millis(1))));
    let frame = next_frame(&mut c.agent, Duration::from_millis(100)).await;
    assert!(frame.is_none(), "a second kill: {frame:?}");
    assert_timed_out(&mut c, id, &exec).await;
}

#[tokio::test]
async fn a_disarmed_deadline_never_fires() {
    let mut c = connect(no_probes()).await;
    let second = Some(Duration::from_secs(1));
    let (id, exec) = execution(&mut c, false, LIMIT, second).await;
    tokio::time::pause();
    assert!(exec.set_deadline(None));
    // Half a minute on the paused clock, far past the second it was started with.
    let frame = next_frame(&mut c.agent, Duration::from_secs(30)).await;
    assert!(frame.is_none(), "a disarmed deadline fired: {frame:?}");
    exited(&mut c.agent, id, ExitStatus::Code(0)).await;
    let out = tokio::time::timeout(PAUSED_HANG, exec.wait())
        .await
        .expect("wait() hung")
        .unwrap();
    assert_eq!((out.exit_code, out.timed_out), (0, false));
}

#[tokio::test]
async fn a_re_armed_deadline_fires_at_the_new_time() {
    let mut c = connect(no_probes()).await;
    let (id, exec) = execution(&mut c, false, LIMIT, None).await;
    tokio::time::pause();
    assert!(exec.set_deadline(Some(Duration::from_secs(1))));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Re-armed before the first deadline: it runs from now, and the first one is gone.
    assert!(exec.set_deadline(Some(Duration::from_secs(5))));
    let rearmed = tokio::time::Instant::now();
    match next_frame(&mut c.agent, PAUSED_HANG).await {
        Some(HostMessage::KillTree { exec_id }) => assert_eq!(exec_id, id),
        other => panic!("expected the timeout's kill, got {other:?}"),
    }
    let after = tokio::time::Instant::now() - rearmed;
    assert!(
        after >= Duration::from_secs(5),
        "fired {after:?} after re-arming"
    );
    assert_timed_out(&mut c, id, &exec).await;
}

#[tokio::test]
async fn a_deadline_set_after_the_exit_does_nothing() {
    let mut c = connect(Deadlines::default()).await;
    let (id, exec) = execution(&mut c, false, LIMIT, None).await;
    exited(&mut c.agent, id, ExitStatus::Code(0)).await;
    let out = tokio::time::timeout(HANG, exec.wait())
        .await
        .expect("wait() hung")
        .unwrap();
    assert_eq!((out.exit_code, out.timed_out), (0, false));
    assert!(!exec.set_deadline(Some(Duration::from_millis(1))));
    let frame = next_frame(&mut c.agent, Duration::from_millis(100)).await;
    assert!(frame.is_none(), "a kill after the exit: {frame:?}");
    let again = exec.wait().await.unwrap();
    assert_eq!((again.exit_code, again.timed_out), (0, false));
    assert!(c.client.closed().is_none());
}

#[tokio::test]
async fn a_disarm_reported_as_taken_is_never_overtaken_by_the_old_deadline() {
    let mut c = connect(no_probes()).await;
    let (id, exec) = execution(&mut c, false, LIMIT, None).await;
    tokio::time::pause();
    // Each round this task wakes at the very instant the deadline is due and disarms it
    // before the driver ran: the driver then finds both its alarm due and the disarm pending,
    // and may pick either first. The disarm wins every time.
    for _ in 0..40 {
        assert!(exec.set_deadline(Some(Duration::from_secs(1))));
        tokio::time::sleep(Duration::from_secs(1)).await;
        // (Of two timers due at the same instant, tokio wakes this task first: were the
        // driver woken first, the timeout would fire and this would report it.)
        assert!(exec.set_deadline(None), "the driver ran before the disarm");
        let frame = next_frame(&mut c.agent, Duration::from_millis(10)).await;
        assert!(frame.is_none(), "the disarmed deadline fired: {frame:?}");
    }
    exited(&mut c.agent, id, ExitStatus::Code(0)).await;
    let out = tokio::time::timeout(PAUSED_HANG, exec.wait())
        .await
        .expect("wait() hung")
        .unwrap();
    assert_eq!((out.exit_code, out.timed_out), (0, false));
}
