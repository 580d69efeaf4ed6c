//! SQL for the event stream and webhooks: reading audit records as events,
//! webhook registrations, the delivery log and the expiring-certificate
//! markers (pruned in `prune`).
//!
//! Events are audit records, so nothing here stores an event twice. Delivery
//! attempts are telemetry, like denials: not audited.

use super::audit::{AUDIT_COLUMNS, audit_record};
use super::{AuditEntry, Refusal, Store, StoreError, change_one};
use sqlx::Row;
use sqlx::any::AnyRow;
use tessera_core::api::{self, AuditRecord, DeliveryOutcome, EventKind};
use tessera_core::time::{parse_rfc3339, rfc3339};

/// A webhook registration as stored.
#[derive(Debug, Clone)]
pub struct WebhookRow {
    /// ID.
    pub id: String,
    /// Receiver URL (validated at registration).
    pub url: String,
    /// Event kinds delivered.
    pub kinds: Vec<EventKind>,
    /// Trust anchors (PEM) for a private receiver; None: the system's roots.
    pub ca_pem: Option<String>,
    /// Operator note.
    pub description: Option<String>,
    /// The signing secret, sealed under the KEK.
    pub secret_sealed: Vec<u8>,
    /// Who registered it.
    pub created_by: String,
    /// When, unix seconds.
    pub created_at: i64,
    /// Delivery cursor: the last event handled (delivered or given up on).
    pub last_event_id: i64,
    /// Failed attempts so far at the first matching event after the cursor.
    pub attempts: i64,
    /// No attempt before this, unix milliseconds.
    pub next_attempt_ms: i64,
}

impl WebhookRow {
    /// The API view (never the secret).
    pub fn to_api(&self) -> api::Webhook {
        api::Webhook {
            id: self.id.clone(),
            url: self.url.clone(),
            kinds: self.kinds.clone(),
            private_ca: self.ca_pem.is_some(),
            description: self.description.clone(),
            created_by: self.created_by.clone(),
            created_at: rfc3339(self.created_at),
            last_event_id: self.last_event_id,
            attempts: self.attempts,
        }
    }
}

/// A webhook's delivery state: where its cursor is and how its retries stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryState {
    /// The last event handled.
    pub last_event_id: i64,
    /// Failed attempts at the next event.
    pub attempts: i64,
    /// No attempt before this, unix milliseconds.
    pub next_attempt_ms: i64,
}

/// A certificate just reported as expiring.
#[derive(Debug, Clone)]
pub struct ExpiringCert {
    /// Serial.
    pub serial: String,
    /// SPIFFE ID.
    pub spiffe_id: String,
    /// notAfter, unix seconds.
    pub not_after: i64,
}

/// Most exact audit actions one event query can filter on (every kind's
/// actions together are fewer).
const MAX_ACTIONS: usize = 8;

const WEBHOOK_SELECT: &str = "SELECT id, url, kinds, ca_pem, description, secret_sealed, created_by, created_at, \
     last_event_id, attempts, next_attempt_ms FROM webhooks";

fn webhook_row(r: &AnyRow) -> WebhookRow {
    let kinds: String = r.get(2);
    WebhookRow {
        id: r.get(0),
        url: r.get(1),
        kinds: serde_json::from_str(&kinds).unwrap_or_default(),
        ca_pem: r.get(3),
        description: r.get(4),
        secret_sealed: r.get(5),
        created_by: r.get(6),
        created_at: r.get(7),
        last_event_id: r.get(8),
        attempts: r.get(9),
        next_attempt_ms: r.get(10),
    }
}

impl Store {
    // ---- events -----------------------------------------------------------

    /// Audit records with `after < seq <= upto` whose action is one of `kinds`
    /// (all kinds if empty), in order, at most `limit`. The caller bounds
    /// `upto - after`, so one call never scans an unbounded range.
    pub async fn event_records(
        &self,
        after: i64,
        upto: i64,
        kinds: &[EventKind],
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let kinds: &[EventKind] = if kinds.is_empty() {
            &EventKind::ALL
        } else {
            kinds
        };
        let mut actions: Vec<Option<String>> = kinds
            .iter()
            .flat_map(|k| k.actions().iter().map(|a| Some((*a).to_owned())))
            .collect();
        actions.truncate(MAX_ACTIONS);
        actions.resize(MAX_ACTIONS, None);
        let ca = kinds.contains(&EventKind::CaStateChanged) as i64;
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log \
             WHERE seq > $1 AND seq <= $2 AND (action IN (CAST($3 AS TEXT), CAST($4 AS TEXT), \
             CAST($5 AS TEXT), CAST($6 AS TEXT), CAST($7 AS TEXT), CAST($8 AS TEXT), CAST($9 AS TEXT), \
             CAST($10 AS TEXT)) OR (CAST($11 AS BIGINT) = 1 AND action LIKE 'ca.%')) \
             ORDER BY seq LIMIT $12"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(after).bind(upto);
        for a in actions {
            q = q.bind(a);
        }
        let rows = q.bind(ca).bind(limit).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(audit_record).collect())
    }

    // ---- webhooks ---------------------------------------------------------

    /// Stores a webhook, audited. Its cursor starts at the audit log's head, so
    /// it receives only events after its registration. Refused with
    /// [`Refusal::WebhookLimit`] if `max` webhooks exist already.
    pub async fn create_webhook(
        &self,
        w: &WebhookRow,
        max: i64,
        audit: AuditEntry,
    ) -> Result<WebhookRow, StoreError> {
        let row = w.clone();
        self.core()
            .write(vec![audit], move |tx| {
                Box::pin(async move {
                    let n: i64 = sqlx::query("SELECT COUNT(*) FROM webhooks")
                        .fetch_one(&mut **tx)
                        .await?
                        .get(0);
                    if n >= max {
                        return Err(Refusal::WebhookLimit { max }.into());
                    }
                    sqlx::query(
                        "INSERT INTO webhooks (id, url, kinds, ca_pem, description, secret_sealed, created_by, \
                         created_at, last_event_id, attempts, next_attempt_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, \
                         (SELECT COALESCE(MAX(seq), 0) FROM audit_log), 0, 0)",
                    )
                    .bind(row.id)
                    .bind(row.url)
                    .bind(serde_json::to_string(&row.kinds).unwrap_or_default())
                    .bind(row.ca_pem)
                    .bind(row.description)
                    .bind(row.secret_sealed)
                    .bind(row.created_by)
                    .bind(row.created_at)
                    .execute(&mut **tx)
                    .await?;
                    Ok(())
                })
            })
            .await?;
        self.get_webhook(&w.id).await
    }

    /// Reads one webhook.
    pub async fn get_webhook(&self, id: &str) -> Result<WebhookRow, StoreError> {
        let sql = format!("{WEBHOOK_SELECT} WHERE id = $1");
        let r = self.row_by(sql, id).await?.ok_or(StoreError::NotFound)?;
        Ok(webhook_row(&r))
    }

    /// Lists webhooks, oldest first, at most `limit`.
    pub async fn list_webhooks(&self, limit: i64) -> Result<Vec<WebhookRow>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("{WEBHOOK_SELECT} ORDER BY created_at, id LIMIT $1"));
        let rows = sqlx::query(sql).bind(limit).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(webhook_row).collect())
    }

    /// Deletes a webhook and its delivery log, audited.
    pub async fn delete_webhook(&self, id: &str, audit: AuditEntry) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.core()
            .write(vec![audit], move |tx| {
                Box::pin(async move {
                    change_one(tx, "DELETE FROM webhooks WHERE id = $1", id.clone()).await?;
                    sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = $1")
                        .bind(id)
                        .execute(&mut **tx)
                        .await?;
                    Ok(())
                })
            })
            .await
    }

    /// Moves a webhook's delivery state from `from` to `to` with one
    /// conditional UPDATE, recording `delivery` (if any) in the same
    /// transaction. Returns false, changing nothing, if the state is no longer
    /// `from` (the webhook was deleted, or another replica moved it).
    pub async fn advance_webhook(
        &self,
        webhook_id: &str,
        from: DeliveryState,
        to: DeliveryState,
        delivery: Option<&api::WebhookDelivery>,
    ) -> Result<bool, StoreError> {
        let core = self.core();
        let _turn = core.sqlite_turn().await;
        let mut tx = core.begin_write().await?;
        let r = sqlx::query(
            "UPDATE webhooks SET last_event_id = $2, attempts = $3, next_attempt_ms = $4 \
             WHERE id = $1 AND last_event_id = $5 AND attempts = $6",
        )
        .bind(webhook_id.to_owned())
        .bind(to.last_event_id)
        .bind(to.attempts)
        .bind(to.next_attempt_ms)
        .bind(from.last_event_id)
        .bind(from.attempts)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        if let Some(d) = delivery {
            sqlx::query(
                "INSERT INTO webhook_deliveries (webhook_id, event_id, kind, attempt, outcome, status_code, \
                 error, duration_ms, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(d.webhook_id.clone())
            .bind(d.event_id)
            .bind(d.kind.as_str().to_owned())
            .bind(d.attempt)
            .bind(d.outcome.as_str().to_owned())
            .bind(d.status_code.map(i64::from))
            .bind(d.error.clone())
            .bind(d.duration_ms)
            .bind(parse_rfc3339(&d.at).unwrap_or(0))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Delivery attempts of one webhook, newest first, at most `limit`.
    pub async fn list_deliveries(
        &self,
        webhook_id: &str,
        limit: i64,
    ) -> Result<Vec<api::WebhookDelivery>, StoreError> {
        let rows = sqlx::query(
            "SELECT webhook_id, event_id, kind, attempt, outcome, status_code, error, duration_ms, at \
             FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(webhook_id.to_owned())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some(api::WebhookDelivery {
                    webhook_id: r.get(0),
                    event_id: r.get(1),
                    kind: EventKind::parse(&r.get::<String, _>(2))?,
                    attempt: r.get(3),
                    outcome: DeliveryOutcome::parse(&r.get::<String, _>(4))?,
                    status_code: r
                        .get::<Option<i64>, _>(5)
                        .and_then(|c| u16::try_from(c).ok()),
                    error: r.get(6),
                    duration_ms: r.get(7),
                    at: rfc3339(r.get(8)),
                })
            })
            .collect())
    }

    // ---- expiring certificates --------------------------------------------

    /// Reports, once each, unrevoked certificates nearing their notAfter: the
    /// last `window_seconds` of their life, or with `window_seconds` = 0 the
    /// last sixth of it; and for whose SPIFFE ID no other unrevoked
    /// certificate lasts longer (it was not renewed; of several ending in the
    /// same second, the one with the greatest serial counts as the newest). Each gets a `cert.expiring`
    /// audit record (the `certificate.expiring` event) and a marker, in one
    /// transaction under the audit lock, so replicas scanning together report
    /// it once. At most `limit` per call; only certificates expiring before
    /// `now + lookahead` are considered (the longest lifetime bounds the scan).
    pub async fn report_expiring(
        &self,
        now: i64,
        window_seconds: i64,
        lookahead: i64,
        limit: i64,
    ) -> Result<Vec<ExpiringCert>, StoreError> {
        let core = self.core();
        let mut w = core.serialized().await?;
        let rows = sqlx::query(
            "SELECT c.serial, c.spiffe_id, c.not_after FROM certificates c \
             WHERE c.revoked_at IS NULL AND c.not_after > $1 AND c.not_after <= $2 \
             AND ((CAST($3 AS BIGINT) = 0 AND (c.not_after - $1) * 6 <= c.not_after - c.not_before) \
                  OR ($3 > 0 AND c.not_after - $1 <= $3)) \
             AND NOT EXISTS (SELECT 1 FROM cert_expiring m WHERE m.serial = c.serial) \
             AND NOT EXISTS (SELECT 1 FROM certificates n WHERE n.spiffe_id = c.spiffe_id \
                  AND n.revoked_at IS NULL \
                  AND (n.not_after > c.not_after OR (n.not_after = c.not_after AND n.serial > c.serial))) \
             ORDER BY c.not_after, c.serial LIMIT $4",
        )
        .bind(now)
        .bind(now.saturating_add(lookahead))
        .bind(window_seconds)
        .bind(limit)
        .fetch_all(&mut *w.tx)
        .await?;
        let found: Vec<ExpiringCert> = rows
            .iter()
            .map(|r| ExpiringCert {
                serial: r.get(0),
                spiffe_id: r.get(1),
                not_after: r.get(2),
            })
            .collect();
        let mut audits = Vec::with_capacity(found.len());
        for c in &found {
            sqlx::query(
                "INSERT INTO cert_expiring (serial, not_after, reported_at) VALUES ($1, $2, $3)",
            )
            .bind(c.serial.clone())
            .bind(c.not_after)
            .bind(now)
            .execute(&mut *w.tx)
            .await?;
            audits.push(AuditEntry {
                actor: "system".into(),
                action: "cert.expiring",
                target: c.serial.clone(),
                details: serde_json::json!({
                    "spiffe_id": c.spiffe_id,
                    "not_after": c.not_after,
                    "remaining_seconds": c.not_after - now,
                }),
            });
        }
        w.commit(&audits, now).await?;
        Ok(found)
    }
}
