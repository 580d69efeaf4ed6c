//! Nodes (hosts running `tessera-agent`): listing and banning. The entries a
//! node's agent may claim are read in `entries`.

use super::revocation::{LiveBy, revoke_live_in_tx};
use super::{AuditEntry, Store, StoreError};
use sqlx::Row;
use sqlx::any::AnyRow;
use tessera_core::api::NodeInfo;
use tessera_core::time::rfc3339;

const NODE_SELECT: &str = "SELECT id, spiffe_id, attestation_type, banned, banned_at, created_at, last_seen, selectors FROM nodes";

fn node_row(r: &AnyRow) -> NodeInfo {
    NodeInfo {
        id: r.get(0),
        spiffe_id: r.get(1),
        attestation_type: r.get(2),
        banned: r.get::<i64, _>(3) != 0,
        banned_at: r.get::<Option<i64>, _>(4).map(rfc3339),
        created_at: rfc3339(r.get(5)),
        last_seen: rfc3339(r.get(6)),
        selectors: r
            .get::<Option<String>, _>(7)
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default(),
    }
}

impl Store {
    /// Nodes, by name, at most `limit`.
    pub async fn list_nodes(&self, limit: i64) -> Result<Vec<NodeInfo>, StoreError> {
        let sql = format!("{NODE_SELECT} ORDER BY id LIMIT $1");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(node_row).collect())
    }

    /// One node by name.
    pub async fn get_node(&self, id: &str) -> Result<NodeInfo, StoreError> {
        let sql = format!("{NODE_SELECT} WHERE id = $1");
        let r = self.row_by(sql, id).await?.ok_or(StoreError::NotFound)?;
        Ok(node_row(&r))
    }

    /// One node by SPIFFE ID, if recorded.
    pub async fn node_by_spiffe_id(&self, spiffe_id: &str) -> Result<Option<NodeInfo>, StoreError> {
        let sql = format!("{NODE_SELECT} WHERE spiffe_id = $1");
        Ok(self.row_by(sql, spiffe_id).await?.as_ref().map(node_row))
    }

    /// Bans (`banned = true`) or unbans a node, audited. Banning also revokes,
    /// in the same transaction, every live certificate issued through the
    /// node (reason `reason`). Returns (serials revoked, feed version after).
    pub async fn set_node_banned(
        &self,
        id: &str,
        banned: bool,
        reason: i64,
        now: i64,
        audit: AuditEntry,
    ) -> Result<(Vec<String>, i64), StoreError> {
        let core = self.core();
        let mut w = core.serialized().await?;
        w.state.clear_verified();
        let tx = &mut w.tx;
        let row = sqlx::query("SELECT spiffe_id FROM nodes WHERE id = $1")
            .bind(id.to_owned())
            .fetch_optional(&mut **tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let spiffe_id: String = row.get(0);
        sqlx::query("UPDATE nodes SET banned = $2, banned_at = $3 WHERE id = $1")
            .bind(id.to_owned())
            .bind(banned as i64)
            .bind(banned.then_some(now))
            .execute(&mut **tx)
            .await?;
        let mut audits = vec![audit];
        let (revoked, version) = if banned {
            let (revoked, version, mut more) = revoke_live_in_tx(
                tx,
                LiveBy::Node(spiffe_id),
                reason,
                now,
                &audits[0].actor.clone(),
            )
            .await?;
            audits.append(&mut more);
            (revoked, version)
        } else {
            (vec![], 0)
        };
        w.commit(&audits, now).await?;
        Ok((revoked, version))
    }
}
