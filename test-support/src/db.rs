//! Databases that exist for one test: a temp SQLite file, or a fresh
//! PostgreSQL database on the server `TESSERA_TEST_POSTGRES_URL` names.

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on the suite's PostgreSQL server.
    Postgres,
}

/// Runs an async test body once per backend: `both_backends!(name);` expects
/// `async fn name(db: Db)` in the same module and makes the tests
/// `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::Db::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::Db::Postgres).await
            }
        }
    };
}

/// The PostgreSQL server the suite uses, from `TESSERA_TEST_POSTGRES_URL`
/// (`.ci/run` starts the server and sets it). Missing is a test failure,
/// never a skip.
fn postgres_admin_url() -> String {
    std::env::var("TESSERA_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "TESSERA_TEST_POSTGRES_URL must name the PostgreSQL server of the tests \
             (e.g. postgres://tessera:tessera@127.0.0.1:5432/postgres; .ci/run sets it)"
        )
    })
}

/// A database that exists for one test and is removed after it.
pub struct TestDb {
    /// The URL the CA is given (`sqlite://...` or `postgres://...`).
    pub url: String,
    kind: Db,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// Creates the database: a SQLite file in a temp directory, or a
    /// uniquely named PostgreSQL database (an unreachable server fails the test).
    pub async fn new(db: Db) -> Self {
        match db {
            Db::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}/tessera.db?mode=rwc", dir.path().display());
                TestDb {
                    url,
                    kind: db,
                    pg_name: None,
                    _dir: Some(dir),
                }
            }
            Db::Postgres => {
                let admin = postgres_admin_url();
                let name = format!("tessera_t_{}", unique_suffix());
                let mut conn = connect(&admin).await.unwrap_or_else(|e| {
                    panic!("PostgreSQL at {admin} is required (run .ci/run): {e}")
                });
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
                let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap();
                TestDb {
                    url: format!("{base}/{name}"),
                    kind: db,
                    pg_name: Some(name),
                    _dir: None,
                }
            }
        }
    }

    /// Which backend this is.
    pub fn kind(&self) -> Db {
        self.kind
    }

    /// A raw connection, for tests that read or tamper with rows directly
    /// (product code keeps its SQL in the store).
    pub async fn raw(&self) -> sqlx::AnyConnection {
        connect(&self.url).await.unwrap()
    }
}

/// 16 random hex characters: database names must not collide across the
/// tests (and worktrees) sharing one PostgreSQL server.
fn unique_suffix() -> String {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; 8];
    SystemRandom::new().fill(&mut b).unwrap();
    hex::encode(b)
}

async fn connect(url: &str) -> Result<sqlx::AnyConnection, sqlx::Error> {
    sqlx::any::install_default_drivers();
    <sqlx::AnyConnection as sqlx::Connection>::connect(url).await
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        let admin = postgres_admin_url();
        // Drop may run inside a runtime; the cleanup gets a thread and runtime of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(mut c) = connect(&admin).await {
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
