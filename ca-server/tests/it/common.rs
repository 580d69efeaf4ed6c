//! Shared test harness: a real server in this process on loopback TLS over a
//! real database (a temp SQLite file, or a fresh PostgreSQL database per test,
//! from the test-support crate), and clients holding real credentials.

#![allow(dead_code)]

use hyper::StatusCode;
use serde_json::Value;
use sqlx::Row;
use std::sync::Arc;
use tessera_ca::authority::Authority;
use tessera_ca::config::{Config, Options};
use tessera_ca::server::Running;
use tessera_core::api::{AuditRecord, Role};
use tessera_core::client::Client;
pub use tessera_test_support::{
    Clients, Db, TestDb, array, ca_ids, call, csr, delete, field_strs, get, id, issue, post, renew,
    revoke, strs,
};

/// Creates an entry from `body` as `client`, which must answer
/// `201 Created`, and returns its JSON.
pub async fn create_entry(client: &Client, body: Value) -> Value {
    let (s, v) = post(client, "/v1/entries", body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v
}

/// The whole audit log as the API serves it (to an admin or auditor).
pub async fn audit_log(admin: &Client) -> Vec<AuditRecord> {
    let (s, v) = get(admin, "/v1/audit?limit=1000").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let items: Vec<AuditRecord> = serde_json::from_value(v["items"].clone()).unwrap();
    assert!(items.len() < 1000, "more than one page");
    items
}

/// [`audit_log`], its hash chain verified from the start.
pub async fn verified_audit_log(admin: &Client) -> Vec<AuditRecord> {
    let records = audit_log(admin).await;
    tessera_core::audit::verify_chain([0; 32], &records).unwrap();
    records
}

/// A CA server running in this process on a loopback port.
pub struct Harness {
    pub auth: Arc<Authority>,
    pub running: Option<Running>,
    pub url: String,
    pub dir: tempfile::TempDir,
    pub db: TestDb,
}

impl Harness {
    pub async fn start(db: Db) -> Self {
        Self::start_with(db, &[]).await
    }

    /// Starts with extra `--set` style overrides.
    pub async fn start_with(db: Db, sets: &[&str]) -> Self {
        let db = TestDb::new(db).await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&db, dir.path(), sets);
        Self::start_config(db, dir, cfg).await
    }

    /// Starts a server on an existing database and data directory.
    pub async fn start_config(db: TestDb, dir: tempfile::TempDir, cfg: Config) -> Self {
        let auth = Authority::start(cfg).await.unwrap();
        let running = tessera_ca::server::start(auth.clone(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let url = format!("https://localhost:{}", running.addr.port());
        Harness {
            auth,
            running: Some(running),
            url,
            dir,
            db,
        }
    }

    /// A client holding an operator certificate with `role`.
    pub async fn operator(&self, role: Role) -> Client {
        let (key, cert) = self
            .auth
            .issue_operator_cert(role.as_str(), role)
            .await
            .unwrap();
        self.with_cert(&cert, &key)
    }

    /// Creates an entry as admin and returns its JSON.
    pub async fn entry(&self, spiffe_id: &str) -> Value {
        self.entry_with(serde_json::json!({
            "spiffe_id": spiffe_id, "selectors": ["unix:uid:1000"]
        }))
        .await
    }

    /// Creates the entry `body` describes as admin and returns its JSON.
    pub async fn entry_with(&self, body: Value) -> Value {
        let admin = self.operator(Role::Admin).await;
        let v = create_entry(&admin, body).await;
        v
    }

    /// Creates a join token for a SPIFFE ID (entry must exist) and returns the secret.
    pub async fn join_token(&self, spiffe_id: &str) -> String {
        let admin = self.operator(Role::Admin).await;
        let (s, v) = post(
            &admin,
            "/v1/tokens",
            serde_json::json!({"spiffe_id": spiffe_id}),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_owned()
    }

    /// Redeems a fresh join token for `spiffe_id`; returns (cert PEM, key PEM, response).
    pub async fn workload(&self, spiffe_id: &str) -> (String, String, Value) {
        let token = self.join_token(spiffe_id).await;
        let (key, csr) = csr();
        let (s, v) = post(
            &self.anonymous(),
            "/v1/certs/redeem",
            serde_json::json!({"token": token, "csr": csr}),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        (
            v["certificate"].as_str().unwrap().to_owned(),
            key.serialize_pem(),
            v,
        )
    }

    /// Attests a node: creates its node entry
    /// (`spiffe://example.org/tessera/agent/<name>`), a join token for it and
    /// redeems it; returns (cert PEM, key PEM, response).
    pub async fn node(&self, name: &str) -> (String, String, Value) {
        let admin = self.operator(Role::Admin).await;
        let sid = format!("spiffe://example.org/tessera/agent/{name}");
        create_entry(
            &admin,
            serde_json::json!({"spiffe_id": sid, "selectors": ["node:name:x"]}),
        )
        .await;
        self.workload(&sid).await
    }

    /// Moves the end of validity of every leaf `ca_id` signed to 1970, straight
    /// in the database (the clock, for retirement and removal).
    pub async fn expire_leaves_of(&self, ca_id: &str) {
        let mut c = self.db.raw().await;
        sqlx::query("UPDATE certificates SET not_after = 1 WHERE ca_id = $1")
            .bind(ca_id.to_owned())
            .execute(&mut c)
            .await
            .unwrap();
    }

    /// Stores a join token row straight through the store (no API, any expiry).
    pub async fn store_token(&self, row: tessera_ca::store::TokenRow) {
        let audit = test_audit("token.create", &row.id);
        self.auth
            .store
            .create_token(&row, "test", audit)
            .await
            .unwrap();
    }

    /// Counts rows of a table, straight from the database.
    pub async fn count(&self, table: &str) -> i64 {
        let mut c = self.db.raw().await;
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
            .fetch_one(&mut c)
            .await
            .unwrap()
            .get::<i64, _>(0)
    }
}

impl Clients for Harness {
    fn url(&self) -> &str {
        &self.url
    }

    fn anchors(&self) -> Vec<rustls::pki_types::CertificateDer<'static>> {
        self.auth.bundle().anchors.clone()
    }
}

/// Panics unless the answer `(status, body)` is `want` with problem code `code`.
#[track_caller]
pub fn assert_problem(status: StatusCode, body: &Value, want: StatusCode, code: &str) {
    assert_eq!(
        (status, body["code"].as_str()),
        (want, Some(code)),
        "{body}"
    );
}

/// The audit entry of a row a test writes straight through the store.
pub fn test_audit(action: &'static str, target: &str) -> tessera_ca::store::AuditEntry {
    tessera_ca::store::AuditEntry {
        actor: "test".into(),
        action,
        target: target.to_owned(),
        details: serde_json::json!({}),
    }
}

/// The configuration the harness uses: this database, this data directory,
/// loopback port 0, plus `section.key=value` overrides.
pub fn config(db: &TestDb, dir: &std::path::Path, sets: &[&str]) -> Config {
    let mut all = vec![
        format!("data_dir=\"{}\"", dir.display()),
        format!("database_url=\"{}\"", db.url),
        "listen=\"127.0.0.1:0\"".to_string(),
    ];
    all.extend(sets.iter().map(|s| s.to_string()));
    Config::load(None, Vec::<(String, String)>::new(), &all).unwrap()
}
