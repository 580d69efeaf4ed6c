//! Shared test harness: real databases (a temp SQLite file, or a fresh
//! PostgreSQL database per test), a real server on loopback TLS, and clients
//! holding real credentials.

#![allow(dead_code)]

use hyper::{Method, StatusCode};
use serde_json::Value;
use sqlx::Row;
use std::sync::Arc;
use tessera_ca::authority::Authority;
use tessera_ca::config::Config;
use tessera_ca::server::Running;
use tessera_core::api::Role;
use tessera_core::client::Client;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Runs an async test body once per backend: `both_backends!(name);` expects
/// `async fn name(db: Db)` in the same module.
#[macro_export]
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::Db::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::common::Db::Postgres).await
            }
        }
    };
}

/// The PostgreSQL server the suite uses. `.ci/run` starts it; a missing server
/// is a test failure, never a skip.
pub fn postgres_admin_url() -> String {
    std::env::var("TESSERA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://tessera:tessera@127.0.0.1:5432/postgres".into())
}

/// A database that exists for one test and is removed after it.
pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn new(db: Db) -> Self {
        match db {
            Db::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}/tessera.db?mode=rwc", dir.path().display());
                TestDb {
                    url,
                    pg_name: None,
                    _dir: Some(dir),
                }
            }
            Db::Postgres => {
                sqlx::any::install_default_drivers();
                let admin = postgres_admin_url();
                let name = format!("tessera_t_{}", tessera_ca::ca::random_id());
                let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is required (run .ci/run or set TESSERA_TEST_POSTGRES_URL): {e}"));
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap();
                TestDb {
                    url: format!("{base}/{name}"),
                    pg_name: Some(name),
                    _dir: None,
                }
            }
        }
    }

    /// A raw connection for tampering tests (product code keeps SQL in the store).
    pub async fn raw(&self) -> sqlx::AnyConnection {
        sqlx::any::install_default_drivers();
        <sqlx::AnyConnection as sqlx::Connection>::connect(&self.url)
            .await
            .unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            let admin = postgres_admin_url();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    if let Ok(mut c) =
                        <sqlx::AnyConnection as sqlx::Connection>::connect(&admin).await
                    {
                        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut c)
                        .await;
                    }
                });
            })
            .join();
        }
    }
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

    /// The trust bundle as DER.
    pub fn anchors(&self) -> Vec<rustls::pki_types::CertificateDer<'static>> {
        self.auth.bundle().anchors.clone()
    }

    /// A client with no credentials.
    pub fn anonymous(&self) -> Client {
        let tls = tessera_core::tls::api_client_config(&self.anchors(), None, false).unwrap();
        Client::new(&self.url, tls, None).unwrap()
    }

    /// A client presenting a bearer token.
    pub fn with_token(&self, token: &str) -> Client {
        let tls = tessera_core::tls::api_client_config(&self.anchors(), None, false).unwrap();
        Client::new(&self.url, tls, Some(token.to_owned())).unwrap()
    }

    /// A client presenting a certificate chain and key (PEM).
    pub fn with_cert(&self, cert_pem: &str, key_pem: &str) -> Client {
        let chain = tessera_core::pem::certs(cert_pem.as_bytes()).unwrap();
        let key = tessera_core::pem::private_key(key_pem.as_bytes()).unwrap();
        let tls = tessera_core::tls::api_client_config(&self.anchors(), Some((chain, key)), false)
            .unwrap();
        Client::new(&self.url, tls, None).unwrap()
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
        let admin = self.operator(Role::Admin).await;
        let (s, v) = call(
            &admin,
            Method::POST,
            "/v1/entries",
            Some(serde_json::json!({
                "spiffe_id": spiffe_id, "selectors": ["unix:uid:1000"]
            })),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }

    /// Creates a join token for a SPIFFE ID (entry must exist) and returns the secret.
    pub async fn join_token(&self, spiffe_id: &str) -> String {
        let admin = self.operator(Role::Admin).await;
        let (s, v) = call(
            &admin,
            Method::POST,
            "/v1/tokens",
            Some(serde_json::json!({"spiffe_id": spiffe_id})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_owned()
    }

    /// Redeems a fresh join token for `spiffe_id`; returns (cert PEM, key PEM, response).
    pub async fn workload(&self, spiffe_id: &str) -> (String, String, Value) {
        let token = self.join_token(spiffe_id).await;
        let (key, csr) = csr();
        let (s, v) = call(
            &self.anonymous(),
            Method::POST,
            "/v1/certs/redeem",
            Some(serde_json::json!({"token": token, "csr": csr})),
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
        let (s, v) = call(
            &admin,
            Method::POST,
            "/v1/entries",
            Some(serde_json::json!({"spiffe_id": sid, "selectors": ["node:name:x"]})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        self.workload(&sid).await
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

/// A fresh P-256 key and a CSR for it (PEM).
pub fn csr() -> (rcgen::KeyPair, String) {
    csr_for(&rcgen::PKCS_ECDSA_P256_SHA256)
}

/// A fresh key of `alg` and a CSR for it (PEM).
pub fn csr_for(alg: &'static rcgen::SignatureAlgorithm) -> (rcgen::KeyPair, String) {
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    (key, csr)
}

/// One JSON call; returns status and parsed body (Null if not JSON).
pub async fn call(
    c: &Client,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let r = c
        .call(method, path, body.map(|b| serde_json::to_vec(&b).unwrap()))
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}
