//! Request authentication as the real API does it: `Access-Id: project/{id}`, `Access-Time`
//! (integer or fractional Unix seconds, within a skew of the *real* clock) and
//! `Access-Signature`, base64 DER ECDSA-secp256k1-SHA256 over `{Access-Id}:{Access-Time}:{raw
//! body}` (high-S accepted). Owns the verdict only; answering and counting is `routes`' job.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k256::ecdsa::VerifyingKey;

use crate::starkbank::sign;

/// Why a request was not authenticated. Every variant is answered 400 `invalidCredentials`
/// (the real codes for a bad Access-Id or Access-Time are not documented).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("Missing header {0}. See https://docs.api.starkbank.com/#auth for details.")]
    Missing(&'static str),
    #[error("Access-Id {0:?} is not a known project. See https://docs.api.starkbank.com/#auth for details.")]
    UnknownProject(String),
    #[error(
        "Access-Time {0:?} is not a number of seconds since 1970. See https://docs.api.starkbank.com/#auth for details."
    )]
    BadTime(String),
    #[error(
        "Access-Time {0} is more than {1} seconds away from the server clock. See https://docs.api.starkbank.com/#auth for details."
    )]
    Skewed(String, u64),
    #[error(
        "Provided digital signature in the header Access-Signature does not check out. See https://docs.api.starkbank.com/#auth for details."
    )]
    BadSignature,
}

/// The headers of one request, as received.
#[derive(Debug, Clone, Copy)]
pub struct Headers<'a> {
    pub access_id: Option<&'a str>,
    pub access_time: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// Checks one request against the registered projects; returns the project id.
pub fn check(
    projects: &[(String, VerifyingKey)],
    h: Headers<'_>,
    body: &[u8],
    max_skew: Duration,
) -> Result<String, AuthError> {
    let access_id = h.access_id.ok_or(AuthError::Missing("Access-Id"))?;
    let access_time = h.access_time.ok_or(AuthError::Missing("Access-Time"))?;
    let signature = h.signature.ok_or(AuthError::Missing("Access-Signature"))?;
    let (project, key) = access_id
        .strip_prefix("project/")
        .and_then(|id| projects.iter().find(|(p, _)| p == id))
        .ok_or_else(|| AuthError::UnknownProject(access_id.to_string()))?;
    let t: f64 = access_time
        .trim()
        .parse()
        .ok()
        .filter(|t: &f64| t.is_finite())
        .ok_or_else(|| AuthError::BadTime(access_time.to_string()))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    if (now - t).abs() > max_skew.as_secs_f64() {
        return Err(AuthError::Skewed(access_time.to_string(), max_skew.as_secs()));
    }
    let message = sign::request_message(access_id, access_time, body);
    sign::verify(key, &message, signature).map_err(|_| AuthError::BadSignature)?;
    Ok(project.clone())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;
    use crate::starkbank::keys;

    fn now() -> String {
        format!("{}", SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs())
    }

    #[test]
    fn accepts_integer_and_fractional_time_and_high_s() {
        let key = keys::generate();
        let projects = vec![("42".to_string(), *key.verifying_key())];
        let skew = Duration::from_secs(60);
        for time in [now(), format!("{}.123456", now())] {
            let sig = sign::sign(&key, &sign::request_message("project/42", &time, b"{}"));
            let twin = sign::high_s_twin(&sig).unwrap();
            for s in [&sig, &twin] {
                let h = Headers { access_id: Some("project/42"), access_time: Some(&time), signature: Some(s) };
                assert_eq!(check(&projects, h, b"{}", skew).unwrap(), "42");
            }
            let h = Headers { access_id: Some("project/42"), access_time: Some(&time), signature: Some(&sig) };
            assert_eq!(check(&projects, h, b"{ }", skew), Err(AuthError::BadSignature));
            let h = Headers { access_id: Some("project/43"), access_time: Some(&time), signature: Some(&sig) };
            assert!(matches!(check(&projects, h, b"{}", skew), Err(AuthError::UnknownProject(_))));
        }
        let old = "1000000000";
        let sig = sign::sign(&key, &sign::request_message("project/42", old, b""));
        let h = Headers { access_id: Some("project/42"), access_time: Some(old), signature: Some(&sig) };
        assert!(matches!(check(&projects, h, b"", skew), Err(AuthError::Skewed(..))));
    }
}
