//! A registration through the real session hands the registry what the agent reported, the BIOS UUID
//! included and unjudged (`None` from an agent older than the field, whose exact bytes are replayed
//! here), and sends the credentials back. Runs the session over an in-memory stream.

use actors::cache::Cache;
use actors::hub::Hub;
use actors::registry::{AgentCredentials, AgentRegistry, Refusal};
use actors::session::{handle_connection, SessionContext};
use actors::stats::Stats;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use wire::{Frame, Register};

type Call = (String, String, Option<String>);

/// Registers everyone, remembering each call.
#[derive(Default)]
struct Recording {
    calls: Mutex<Vec<Call>>,
}

impl AgentRegistry for Recording {
    fn register(
        &self,
        passphrase: &str,
        hostname: &str,
        bios_uuid: Option<&str>,
    ) -> Result<AgentCredentials, Refusal> {
        let mut calls = self.calls.lock().unwrap();
        calls.push((
            passphrase.into(),
            hostname.into(),
            bios_uuid.map(str::to_string),
        ));
        Ok(AgentCredentials {
            agent_id: format!("agent-{}", calls.len()),
            cert_pem: "cert".into(),
            key_pem: "key".into(),
            ca_pem: "ca".into(),
        })
    }
    fn admit(&self, _: &str) -> Result<(), Refusal> {
        Ok(())
    }
    fn identify(&self, _: &[u8]) -> Option<String> {
        None
    }
    fn seen(&self, _: &str, _: &str) {}
}

/// Sends `bytes` on a connection without a client certificate; returns the appliance's answer.
async fn register_with(registry: Arc<Recording>, bytes: &[u8]) -> Option<Frame> {
    let t = tempfile::tempdir().unwrap();
    let ctx = SessionContext {
        cache: Cache::open(t.path(), 1 << 30).unwrap(),
        registry,
        hub: Arc::new(Hub::default()),
        stats: Arc::new(Stats::default()),
        wake: Arc::new(|| {}),
    };
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let session = tokio::spawn(handle_connection(ctx, server, None, stop));
    client.write_all(bytes).await.unwrap();
    client.flush().await.unwrap();
    let answer = wire::read_frame(&mut client).await.unwrap();
    session.await.unwrap().unwrap();
    answer
}

fn encoded(bios_uuid: Option<&str>) -> Vec<u8> {
    let mut v = Vec::new();
    wire::encode(
        &Frame::Register(Register {
            passphrase: "pw".into(),
            hostname: "h".into(),
            bios_uuid: bios_uuid.map(str::to_string),
        }),
        &mut v,
    );
    v
}

#[tokio::test]
async fn the_bios_uuid_reaches_the_registry_as_sent() {
    let registry = Arc::new(Recording::default());
    // An agent older than the field: Register{"pw", "h"} exactly as such agents put it on the wire.
    let old_agent = [
        0x46, 0x57, 0x01, 0x01, 0x00, 0x00, 0x00, 0x07, 0x00, 0x02, 0x70, 0x77, 0x00, 0x01, 0x68,
        0x29, 0x62, 0x50, 0x0c,
    ];
    let uuid = "42172e0b-9a4c-4c3f-8d2e-0123456789ab";
    let sent: [&[u8]; 3] = [
        &old_agent,
        &encoded(Some(uuid)),
        // Not a UUID: judging it is the registry's job; the session passes it on.
        &encoded(Some("not a uuid")),
    ];
    for (i, bytes) in sent.iter().enumerate() {
        let answer = register_with(registry.clone(), bytes).await;
        let Some(Frame::Registered(r)) = answer else {
            panic!("registration {i}: {answer:?}");
        };
        assert_eq!(r.agent_id, format!("agent-{}", i + 1));
    }
    let calls = registry.calls.lock().unwrap();
    let expected: Vec<Call> = [None, Some(uuid), Some("not a uuid")]
        .into_iter()
        .map(|u| ("pw".into(), "h".into(), u.map(str::to_string)))
        .collect();
    assert_eq!(*calls, expected);
}
