//! Test helpers shared by the crate's unit tests: a fake guest agent on a real unix socket, so
//! the host end of the channel ([`AgentClient`]) and what is built on it (the execution
//! driver) are tested without a VM. Only compiled for tests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use boxlite_protocol::{
    nonblocking, ExecLimits, ExecRequest, GuestMessage, HostMessage, OutputStream,
    OUTPUT_CHUNK_LEN, PROTOCOL_VERSION,
};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::agent::{AgentClient, Deadlines, ExecEvent};
use crate::hypervisor::VmExit;

/// The guest's end of the channel.
pub(crate) struct FakeAgent {
    pub(crate) reader: OwnedReadHalf,
    pub(crate) writer: OwnedWriteHalf,
}

impl FakeAgent {
    pub(crate) async fn send(&mut self, msg: GuestMessage) {
        nonblocking::write_message(&mut self.writer, &msg)
            .await
            .unwrap();
    }

    pub(crate) async fn receive(&mut self) -> HostMessage {
        nonblocking::read_message(&mut self.reader)
            .await
            .unwrap()
            .unwrap()
    }

    /// Sends `bytes` of stdout of `exec_id` in chunks of the agent's size.
    pub(crate) async fn output(&mut self, exec_id: u32, mut bytes: u64) {
        while bytes > 0 {
            let n = bytes.min(OUTPUT_CHUNK_LEN as u64);
            self.send(GuestMessage::Output {
                exec_id,
                stream: OutputStream::Stdout,
                data: vec![b'x'; n as usize],
            })
            .await;
            bytes -= n;
        }
    }
}

/// A client connected to a fake agent, and the reasons its broken-channel hook was given.
pub(crate) struct Connected {
    pub(crate) client: Arc<AgentClient>,
    pub(crate) agent: FakeAgent,
    pub(crate) broken: Arc<Mutex<Vec<String>>>,
    pub(crate) _vm: watch::Sender<Option<VmExit>>,
    pub(crate) _dir: tempfile::TempDir,
}

/// Connects a client with `deadlines` to a fake agent (the hellos exchanged).
pub(crate) async fn connect(deadlines: Deadlines) -> Connected {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let (vm, vm_exit) = watch::channel(None);
    let accept = async {
        let (stream, _) = listener.accept().await.unwrap();
        let (reader, writer) = stream.into_split();
        let mut agent = FakeAgent { reader, writer };
        agent
            .send(GuestMessage::Hello {
                version: PROTOCOL_VERSION,
                kernel_release: "test".into(),
                uptime_ms: 1,
            })
            .await;
        assert!(matches!(agent.receive().await, HostMessage::Hello { .. }));
        agent
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let (connected, agent) = tokio::join!(
        AgentClient::connect_with(&path, deadline, vm_exit, deadlines),
        accept
    );
    let (client, _) = connected.unwrap_or_else(|e| panic!("connect: {e:?}"));
    let broken = Arc::new(Mutex::new(Vec::new()));
    let seen = broken.clone();
    client.set_on_broken(move |why| seen.lock().unwrap().push(why.to_owned()));
    Connected {
        client: Arc::new(client),
        agent,
        broken,
        _vm: vm,
        _dir: dir,
    }
}

/// A request to run `true` with stdin open.
pub(crate) fn request() -> ExecRequest {
    ExecRequest {
        exec_id: 0,
        program: "true".into(),
        args: Vec::new(),
        env: Vec::new(),
        working_dir: "/".into(),
        stdin: true,
        user: None,
        tty: None,
        limits: ExecLimits::default(),
        builtin: None,
    }
}

/// Starts an execution through the client; the fake agent has received its `Exec`.
pub(crate) async fn started(c: &mut Connected) -> (u32, mpsc::UnboundedReceiver<ExecEvent>) {
    let (id, events) = c.client.exec(request()).await.unwrap();
    assert!(matches!(c.agent.receive().await, HostMessage::Exec(_)));
    (id, events)
}
