//! ECDSA-secp256k1-SHA256 signatures as Stark Bank uses them: base64 of DER, no recovery byte.
//!
//! Owns: the pure functions that sign a request message and verify a signature over bytes,
//! including the two rules that trip up k256: Stark Bank's signatures are often high-S (k256
//! refuses those unless normalized), and DER lengths vary (70-72 bytes).
//! Does not own: which bytes are signed for a webhook (see `verify`) or HTTP (see `client`).

use base64::Engine as _;
use k256::ecdsa::signature::{Signer as _, Verifier as _};
use k256::ecdsa::{Signature, SigningKey, VerifyingKey};

/// `{Access-Id}:{Access-Time}:{body}`, the message every API request signs.
pub fn request_message(access_id: &str, access_time: &str, body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(access_id.len() + access_time.len() + body.len() + 2);
    msg.extend_from_slice(access_id.as_bytes());
    msg.push(b':');
    msg.extend_from_slice(access_time.as_bytes());
    msg.push(b':');
    msg.extend_from_slice(body);
    msg
}

/// base64(DER(sign(SHA-256(message)))). Deterministic (RFC 6979) and low-S.
pub fn sign(key: &SigningKey, message: &[u8]) -> String {
    let sig: Signature = key.sign(message);
    base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes())
}

/// Why a signature string was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature is not base64-encoded DER")]
    Malformed,
    #[error("signature does not match")]
    Mismatch,
}

/// Decodes base64 DER (surrounding whitespace ignored) into a low-S signature.
pub fn decode(signature_b64: &str) -> Result<Signature, SignatureError> {
    let der = base64::engine::general_purpose::STANDARD
        .decode(signature_b64.trim())
        .map_err(|_| SignatureError::Malformed)?;
    let sig = Signature::from_der(&der).map_err(|_| SignatureError::Malformed)?;
    // Stark Bank signs with a library that does not normalize S; k256 only verifies low-S.
    Ok(sig.normalize_s())
}

/// Verifies an already-decoded signature over `message`.
pub fn verify_decoded(key: &VerifyingKey, message: &[u8], sig: &Signature) -> bool {
    key.verify(message, sig).is_ok()
}

/// Verifies base64 DER over `message`, accepting high-S.
pub fn verify(key: &VerifyingKey, message: &[u8], signature_b64: &str) -> Result<(), SignatureError> {
    let sig = decode(signature_b64)?;
    if verify_decoded(key, message, &sig) { Ok(()) } else { Err(SignatureError::Mismatch) }
}

/// The high-S form of a signature (S replaced by n - S after normalizing, so the result is
/// always high-S, whatever the input was), for tests and for the emulator's fault that
/// imitates Stark Bank's high-S webhook signatures.
pub fn high_s_twin(signature_b64: &str) -> Result<String, SignatureError> {
    use k256::elliptic_curve::ops::Neg as _;
    let sig = decode(signature_b64)?;
    let (r, s) = sig.split_scalars();
    let flipped =
        Signature::from_scalars(r.to_bytes(), s.as_ref().neg().to_bytes()).map_err(|_| SignatureError::Malformed)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(flipped.to_der().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::starkbank::keys;

    #[test]
    fn request_message_is_id_time_body() {
        assert_eq!(request_message("project/1", "1700000000", b"{}"), b"project/1:1700000000:{}");
        assert_eq!(request_message("project/1", "1.5", b""), b"project/1:1.5:");
    }

    #[test]
    fn sign_then_verify_including_high_s_twin() {
        let key = keys::generate();
        let msg = request_message("project/42", "1700000000.25", "{\"name\": \"S\\u00e3o\"}".as_bytes());
        let sig = sign(&key, &msg);
        verify(key.verifying_key(), &msg, &sig).unwrap();
        let twin = high_s_twin(&sig).unwrap();
        assert_ne!(twin, sig);
        verify(key.verifying_key(), &msg, &twin).unwrap();
        assert_eq!(verify(key.verifying_key(), b"other", &sig), Err(SignatureError::Mismatch));
        assert_eq!(verify(key.verifying_key(), &msg, "not base64!"), Err(SignatureError::Malformed));
        assert_eq!(verify(key.verifying_key(), &msg, ""), Err(SignatureError::Malformed));
    }

    #[test]
    fn signatures_are_deterministic_per_message() {
        let key = keys::generate();
        assert_eq!(sign(&key, b"abc"), sign(&key, b"abc"));
    }
}
