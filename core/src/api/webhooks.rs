//! Webhook registration and delivery records.

use super::EventKind;
use serde::{Deserialize, Serialize};

/// Register a webhook receiver (`POST /v1/webhooks`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookCreateRequest {
    /// The receiver, `https://host[:port]/path` (no user information, at most 2048 bytes).
    pub url: String,
    /// The event kinds to deliver (at least one).
    pub kinds: Vec<EventKind>,
    /// Trust anchors (PEM) for a receiver with a private CA; default: the
    /// system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// Operator note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A registered webhook (never its secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Webhook {
    /// ID.
    pub id: String,
    /// Receiver URL.
    pub url: String,
    /// Event kinds delivered.
    pub kinds: Vec<EventKind>,
    /// Whether it trusts its own anchors (`ca_pem`) instead of the system's.
    pub private_ca: bool,
    /// Operator note.
    pub description: Option<String>,
    /// Who registered it.
    pub created_by: String,
    /// When, RFC 3339.
    pub created_at: String,
    /// The last event handled (delivered or given up on).
    pub last_event_id: i64,
    /// Failed attempts so far at the next event.
    pub attempts: i64,
}

/// A webhook just registered: its signing secret is shown this once.
#[derive(Clone, Serialize, Deserialize)]
pub struct WebhookCreated {
    /// The webhook.
    #[serde(flatten)]
    pub webhook: Webhook,
    /// The HMAC-SHA256 key (64 hex characters; the key is this text itself).
    pub secret: String,
}

// The signing secret: never in a log line.
crate::debug_without_secrets!(WebhookCreated: webhook);

/// Registered webhooks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookList {
    /// The webhooks.
    pub items: Vec<Webhook>,
}

/// The outcome of one delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryOutcome {
    /// The receiver answered 2xx.
    Delivered,
    /// The attempt failed; another follows after a backoff.
    Retrying,
    /// The attempt failed and was the last; the event is skipped.
    Failed,
}

impl DeliveryOutcome {
    /// The outcome's name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Retrying => "retrying",
            DeliveryOutcome::Failed => "failed",
        }
    }

    /// Parses an outcome's name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Delivered, Self::Retrying, Self::Failed]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// One delivery attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookDelivery {
    /// The webhook.
    pub webhook_id: String,
    /// The event (audit seq).
    pub event_id: i64,
    /// The event kind.
    pub kind: EventKind,
    /// Attempt number for this event, from 1.
    pub attempt: i64,
    /// What came of it.
    pub outcome: DeliveryOutcome,
    /// The receiver's HTTP status, if it answered.
    pub status_code: Option<u16>,
    /// Why it failed, if it did (never a secret).
    pub error: Option<String>,
    /// How long the attempt took, milliseconds.
    pub duration_ms: i64,
    /// When, RFC 3339.
    pub at: String,
}

/// Delivery attempts of one webhook, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookDeliveryList {
    /// The attempts.
    pub items: Vec<WebhookDelivery>,
}
