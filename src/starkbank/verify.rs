//! Verifying Stark Bank's webhook `Digital-Signature`, as the official SDK does.
//!
//! Owns: the decision "did Stark Bank sign these bytes": raw body first, then the SDK's fallback
//! over Python's sorted re-serialization; and the public-key cache, refetched on a failed
//! verification at most once per interval so forged requests cannot make us hammer the API.
//! Does not own: fetching the key over HTTP (a closure given by the caller) or HTTP answers.

use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use k256::ecdsa::VerifyingKey;

use super::{keys, pyjson, sign};

/// What a verified body turned out to be signed as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signed {
    /// The signature covers the bytes as received.
    Raw,
    /// The signature covers Python's `json.dumps(json.loads(body), sort_keys=True)`; this is
    /// the text that was signed, and the only text a caller should act on.
    Canonical(String),
}

/// Why a webhook was not accepted. Each variant is logged; the HTTP answer stays terse.
#[derive(Debug, thiserror::Error)]
pub enum WebhookAuthError {
    #[error("no Digital-Signature header")]
    Missing,
    #[error("Digital-Signature is not base64 DER")]
    Malformed,
    #[error("Digital-Signature does not match the body")]
    Invalid,
    #[error("Stark Bank's public key is unavailable: {0}")]
    KeyUnavailable(String),
}

/// Verifies `signature_b64` over `body` with `key`: raw bytes first, then the canonical form.
pub fn verify_body(key: &VerifyingKey, body: &[u8], signature_b64: &str) -> Result<Signed, WebhookAuthError> {
    let sig = sign::decode(signature_b64).map_err(|_| WebhookAuthError::Malformed)?;
    if sign::verify_decoded(key, body, &sig) {
        return Ok(Signed::Raw);
    }
    match pyjson::canonicalize(body) {
        Some(canon) if canon.as_bytes() != body && sign::verify_decoded(key, canon.as_bytes(), &sig) => {
            Ok(Signed::Canonical(canon))
        }
        _ => Err(WebhookAuthError::Invalid),
    }
}

/// While no key is loaded, a failed fetch is retried after this long.
const EMPTY_RETRY: Duration = Duration::from_secs(5);

type Fetch = Box<dyn Fn() -> anyhow::Result<String> + Send + Sync>;

/// Stark Bank's public key, fetched once and kept for the process.
pub struct KeyCache {
    fetch: Fetch,
    key: RwLock<Option<VerifyingKey>>,
    last_fetch: Mutex<Option<Instant>>,
    refetch_interval: Duration,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache").field("loaded", &self.is_loaded()).finish()
    }
}

impl KeyCache {
    /// `fetch` returns the PEM text of the current key (`GET /v2/public-key`).
    pub fn new(fetch: impl Fn() -> anyhow::Result<String> + Send + Sync + 'static, refetch_interval: Duration) -> Self {
        Self { fetch: Box::new(fetch), key: RwLock::new(None), last_fetch: Mutex::new(None), refetch_interval }
    }

    /// A cache that starts with `key` and never fetches (for tests and fixed-key setups).
    pub fn fixed(key: VerifyingKey) -> Self {
        let cache = Self::new(|| anyhow::bail!("this key cache does not fetch"), Duration::MAX);
        if let Ok(mut slot) = cache.key.write() {
            *slot = Some(key);
        }
        cache
    }

    pub fn is_loaded(&self) -> bool {
        self.key.read().map(|k| k.is_some()).unwrap_or(false)
    }

    /// Fetches the key if none is cached. While no key could be loaded, fetches are retried at
    /// most every few seconds, and requests meanwhile get `KeyUnavailable` (HTTP 503).
    pub fn ensure_loaded(&self) -> Result<(), WebhookAuthError> {
        if self.is_loaded() { Ok(()) } else { self.refetch().map(|_| ()) }
    }

    /// Fetches a fresh key unless one was fetched within the interval. `Ok(true)` when the key changed.
    fn refetch(&self) -> Result<bool, WebhookAuthError> {
        let unavailable = |why: &str| WebhookAuthError::KeyUnavailable(why.to_string());
        let mut last = self.last_fetch.lock().map_err(|_| unavailable("lock poisoned"))?;
        let loaded = self.is_loaded();
        let interval = if loaded { self.refetch_interval } else { self.refetch_interval.min(EMPTY_RETRY) };
        if last.is_some_and(|t| t.elapsed() < interval) {
            return if loaded { Ok(false) } else { Err(unavailable("the last fetch failed; it is retried shortly")) };
        }
        *last = Some(Instant::now());
        let pem = (self.fetch)().map_err(|e| WebhookAuthError::KeyUnavailable(format!("{e:#}")))?;
        let fresh = keys::parse_public_key(&pem).map_err(|e| WebhookAuthError::KeyUnavailable(e.to_string()))?;
        let mut slot = self.key.write().map_err(|_| unavailable("lock poisoned"))?;
        let changed = slot.as_ref() != Some(&fresh);
        if changed {
            log::info!("loaded Stark Bank public key {}", keys::fingerprint(&fresh));
        }
        *slot = Some(fresh);
        Ok(changed)
    }

    fn current(&self) -> Option<VerifyingKey> {
        self.key.read().ok().and_then(|k| *k)
    }

    /// Verifies a webhook. On a mismatch, refetches the key (at most once per interval) and
    /// tries once more, as the SDK does when Stark Bank rotates its key.
    pub fn verify(&self, body: &[u8], signature: Option<&str>) -> Result<Signed, WebhookAuthError> {
        let signature = signature.filter(|s| !s.trim().is_empty()).ok_or(WebhookAuthError::Missing)?;
        // Reject malformed signatures before touching the key or the network.
        sign::decode(signature).map_err(|_| WebhookAuthError::Malformed)?;
        self.ensure_loaded()?;
        let key = self.current().ok_or_else(|| WebhookAuthError::KeyUnavailable("no key".into()))?;
        match verify_body(&key, body, signature) {
            Err(WebhookAuthError::Invalid) => match self.refetch() {
                Ok(true) => match self.current() {
                    Some(fresh) => verify_body(&fresh, body, signature),
                    None => Err(WebhookAuthError::Invalid),
                },
                _ => Err(WebhookAuthError::Invalid),
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn accepts_raw_and_canonical_and_refuses_the_rest() {
        let key = keys::generate();
        let body = br#"{"event":{"id":"1","b":"S\u00e3o"}}"#;
        let raw_sig = sign::sign(&key, body);
        assert_eq!(verify_body(key.verifying_key(), body, &raw_sig).unwrap(), Signed::Raw);
        let canon = pyjson::canonicalize(body).unwrap();
        let canon_sig = sign::sign(&key, canon.as_bytes());
        assert_eq!(verify_body(key.verifying_key(), body, &canon_sig).unwrap(), Signed::Canonical(canon));
        assert!(matches!(verify_body(key.verifying_key(), b"{\"x\":1}", &raw_sig), Err(WebhookAuthError::Invalid)));
        assert!(matches!(verify_body(key.verifying_key(), body, "@@"), Err(WebhookAuthError::Malformed)));
    }

    /// A key source that serves a stale key first and the real one from the second fetch on
    /// (a rotation), counting fetches; the cache refetches at most once per `interval`.
    fn rotating_cache(interval: Duration) -> (k256::ecdsa::SigningKey, Arc<AtomicUsize>, KeyCache) {
        let real = keys::generate();
        let stale = keys::generate();
        let calls = Arc::new(AtomicUsize::new(0));
        let pems =
            [keys::public_key_pem(stale.verifying_key()).unwrap(), keys::public_key_pem(real.verifying_key()).unwrap()];
        let c = calls.clone();
        let cache = KeyCache::new(
            move || {
                let n = c.fetch_add(1, Ordering::SeqCst);
                Ok(pems[n.min(1)].clone())
            },
            interval,
        );
        (real, calls, cache)
    }

    #[test]
    fn refetches_at_most_once_per_interval() {
        let (_real, calls, cache) = rotating_cache(Duration::from_secs(60));
        let body = b"{}";
        let forged = sign::sign(&keys::generate(), body);
        // First call loads the stale key; the mismatch is not followed by a refetch within the interval.
        assert!(matches!(cache.verify(body, Some(&forged)), Err(WebhookAuthError::Invalid)));
        for _ in 0..50 {
            assert!(matches!(cache.verify(body, Some(&forged)), Err(WebhookAuthError::Invalid)));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "forged requests must not trigger fetches");
        assert!(matches!(cache.verify(body, None), Err(WebhookAuthError::Missing)));
    }

    #[test]
    fn rotated_key_is_picked_up_after_a_failure() {
        let (real, calls, cache) = rotating_cache(Duration::ZERO);
        let body = b"{\"a\": 1}";
        let sig = sign::sign(&real, body);
        assert_eq!(cache.verify(body, Some(&sig)).unwrap(), Signed::Raw);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
