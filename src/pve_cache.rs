//! A short-lived cache of Proxmox VE API answers, for `pvediag serve`.
//!
//! Prometheus scrapes every target on its own schedule, and each scrape used to ask the API for the
//! node list, the container list and the container's config (its execd token) again: 2–3 API
//! calls per scrape, hundreds per minute for a fleet. Those answers change rarely (a container
//! created or started, a token rotated), so `serve` keeps each successful answer for [`TTL`]:
//!
//! - keyed by the API's base URL, a hash of the API token and the path (`/nodes`,
//!   `/nodes/N/lxc`, `/nodes/N/lxc/VMID/config`), so two configurations never share an answer;
//! - only successful answers are kept: an error (timeout, 401, 5xx) is asked again next time;
//! - one request per key at a time: scrapes that arrive together while an answer is being fetched
//!   wait for that one request instead of sending their own;
//! - at most [`MAX_ENTRIES`] answers (the oldest are dropped first).
//!
//! The one-shot CLI (`pvediag`, `--all`, `--wait`) does not use it: it asks the API once per run.
//! After a change on the host (a new container, a rotated token), `serve` sees it within [`TTL`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long an answer is kept.
pub(crate) const TTL: Duration = Duration::from_secs(30);
/// Most answers kept.
pub(crate) const MAX_ENTRIES: usize = 4096;

struct Entry {
    at: Instant,
    cell: Arc<tokio::sync::OnceCell<Value>>,
}

/// A cache of API answers (cheap to clone: every clone shares the same answers).
#[derive(Clone)]
pub(crate) struct PveCache {
    ttl: Duration,
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    /// API requests actually sent through this cache (for tests and metrics).
    fetches: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for PveCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PveCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Default for PveCache {
    fn default() -> Self {
        PveCache::new(TTL)
    }
}

impl PveCache {
    pub fn new(ttl: Duration) -> PveCache {
        PveCache {
            ttl,
            entries: Arc::default(),
            fetches: Arc::default(),
        }
    }

    /// API requests sent through this cache so far (answers fetched, not served from it).
    #[cfg(test)]
    pub(crate) fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The cache key: base URL, a hash of the token (never the token itself), path.
    pub(crate) fn key(base: &str, token: &str, path: &str) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        token.hash(&mut h);
        format!("{base} {:016x} {path}", h.finish())
    }

    /// The answer for `key`: a fresh cached one, or `fetch`'s (kept when it succeeds). Callers
    /// that ask for the same key while it is fetched wait for that fetch.
    pub(crate) async fn get_or_fetch<F, Fut, E>(&self, key: &str, fetch: F) -> Result<Value, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Value, E>>,
    {
        let cell = {
            let mut m = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let fresh = m
                .get(key)
                .filter(|e| now.duration_since(e.at) < self.ttl)
                .map(|e| e.cell.clone());
            match fresh {
                Some(c) => c,
                None => {
                    if m.len() >= MAX_ENTRIES {
                        m.retain(|_, e| now.duration_since(e.at) < self.ttl);
                        while m.len() >= MAX_ENTRIES {
                            let Some(oldest) =
                                m.iter().min_by_key(|(_, e)| e.at).map(|(k, _)| k.clone())
                            else {
                                break;
                            };
                            m.remove(&oldest);
                        }
                    }
                    let c = Arc::new(tokio::sync::OnceCell::new());
                    m.insert(
                        key.to_string(),
                        Entry {
                            at: now,
                            cell: c.clone(),
                        },
                    );
                    c
                }
            }
        };
        cell.get_or_try_init(|| {
            self.fetches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            fetch()
        })
        .await
        .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn answers_are_kept_for_the_ttl_and_errors_are_not() {
        let c = PveCache::new(Duration::from_millis(200));
        let k = PveCache::key("https://pve:8006", "secret", "/nodes");
        assert!(!k.contains("secret"));
        let v = c
            .get_or_fetch(&k, || async { Ok::<_, ()>(json!([1])) })
            .await;
        assert_eq!(v, Ok(json!([1])));
        // Fresh: the second fetch is not called.
        let v = c
            .get_or_fetch(&k, || async { Ok::<_, ()>(json!([2])) })
            .await;
        assert_eq!(v, Ok(json!([1])));
        assert_eq!(c.fetches(), 1);
        // Another token, another answer.
        let k2 = PveCache::key("https://pve:8006", "other", "/nodes");
        assert_eq!(
            c.get_or_fetch(&k2, || async { Ok::<_, ()>(json!([3])) })
                .await,
            Ok(json!([3]))
        );
        // An error is not kept.
        let k3 = PveCache::key("https://pve:8006", "secret", "/nodes/a/lxc");
        assert_eq!(
            c.get_or_fetch(&k3, || async { Err::<Value, _>("down") })
                .await,
            Err("down")
        );
        assert_eq!(
            c.get_or_fetch(&k3, || async { Ok::<_, &str>(json!([])) })
                .await,
            Ok(json!([]))
        );
        // Stale after the TTL.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let v = c
            .get_or_fetch(&k, || async { Ok::<_, ()>(json!([4])) })
            .await;
        assert_eq!(v, Ok(json!([4])));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scrapes_that_arrive_together_share_one_request() {
        let c = PveCache::new(Duration::from_secs(30));
        let k = PveCache::key("https://pve:8006", "t", "/nodes/pve/lxc");
        let all = futures_util::future::join_all((0..20).map(|_| {
            let c = c.clone();
            let k = k.clone();
            async move {
                c.get_or_fetch(&k, || async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok::<_, ()>(json!(["ct"]))
                })
                .await
            }
        }))
        .await;
        assert!(all.iter().all(|v| v == &Ok(json!(["ct"]))));
        assert_eq!(c.fetches(), 1);
    }
}
