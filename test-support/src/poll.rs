//! Bounded polling, for conditions that no event announces (a row in a
//! database, a state behind an API): every wait fails the test at its deadline.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is checked again.
const INTERVAL: Duration = Duration::from_millis(100);

/// Polls `f` until it returns `Some`, failing the test (naming `what`) after `within`.
pub async fn poll_until<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "no {what} within {within:?}");
        tokio::time::sleep(INTERVAL).await;
    }
}

/// Blocks until `f` holds, polling; fails the test (naming `what`) after `within`.
pub fn wait_until(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(INTERVAL);
    }
}
