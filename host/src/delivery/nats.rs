//! The NATS JetStream sink: each grant published as one JSON message (the
//! same grant object the webhook sends) to the configured subject, with
//! `Nats-Msg-Id` set to its idempotency key, so JetStream itself drops a
//! re-send within the stream's duplicate window. A batch counts as delivered
//! only when JetStream has acknowledged every message in it (stored, and
//! replicated as the stream is configured).

use std::time::Duration;

use async_nats::jetstream;

use serde::Serialize;

use super::sink::{GrantBatch, ItemBatch, Sink, SinkError};
use crate::config::NatsSettings;

/// The NATS JetStream sink.
#[derive(Clone)]
pub struct NatsSink {
    jetstream: jetstream::Context,
    subject: String,
    max_batch: u32,
}

impl NatsSink {
    /// Connects (and keeps reconnecting in the background while the server is away).
    pub async fn connect(settings: &NatsSettings) -> Result<NatsSink, async_nats::ConnectError> {
        let client = async_nats::ConnectOptions::new()
            .name("drops-host")
            .retry_on_initial_connect()
            .connect(settings.url.as_str())
            .await?;
        let mut jetstream = jetstream::new(client);
        jetstream.set_timeout(Duration::from_secs(settings.ack_timeout_secs));
        Ok(NatsSink { jetstream, subject: settings.subject.clone(), max_batch: settings.max_batch })
    }
}

impl Sink for NatsSink {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn max_batch(&self) -> u32 {
        self.max_batch
    }

    async fn deliver(&self, batch: &GrantBatch) -> Result<(), SinkError> {
        self.publish("grants", batch.grants.iter().map(|g| (g.idempotency_key.as_str(), g))).await
    }

    async fn deliver_items(&self, batch: &ItemBatch) -> Result<(), SinkError> {
        self.publish("items", batch.deliveries.iter().map(|d| (d.idempotency_key.as_str(), d))).await
    }
}

impl NatsSink {
    /// Publishes one message per `(message id, value)`, then waits for every
    /// acknowledgement: one round trip, not one per message.
    async fn publish<'a, T: Serialize + 'a>(
        &self,
        kind: &'static str,
        messages: impl Iterator<Item = (&'a str, &'a T)>,
    ) -> Result<(), SinkError> {
        let mut acks = Vec::new();
        for (id, message) in messages {
            let body = serde_json::to_vec(message).map_err(|e| SinkError(format!("encoding a message: {e}")))?;
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
            headers.insert("Drops-Message-Kind", kind);
            let ack = self
                .jetstream
                .publish_with_headers(self.subject.clone(), headers, body.into())
                .await
                .map_err(|e| SinkError(format!("publish: {e}")))?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(|e| SinkError(format!("JetStream did not acknowledge: {e}")))?;
        }
        Ok(())
    }
}
