//! secp256k1 keys in the PEM shapes people actually have.
//!
//! Owns: turning PEM text (SDK-written, openssl-written with an `EC PARAMETERS` block, PKCS#8,
//! CRLF, literal `\n` escapes from environment variables, one-line or indented) into k256 keys,
//! writing keys in the SDK's formats, and telling a user whose key is on the wrong curve.
//! Does not own: where the text comes from (config) or signing (`sign`).

use base64::Engine as _;
use k256::ecdsa::{SigningKey, VerifyingKey};
use k256::elliptic_curve::sec1::ToSec1Point as _;
use k256::pkcs8::{DecodePublicKey as _, EncodePublicKey as _, LineEnding};

/// DER encodings of the named-curve OIDs we recognise, to explain a refusal.
const OID_SECP256K1: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("no PEM block `{0}` found (expected a PEM key starting with `-----BEGIN {0}-----`)")]
    NoPem(&'static str),
    #[error("the PEM block is not valid base64")]
    BadBase64,
    #[error("this is a {0} key; Stark Bank keys are secp256k1 (create one with `stark-sweep keygen`)")]
    WrongCurve(&'static str),
    #[error("the key could not be decoded as a secp256k1 key: {0}")]
    Invalid(String),
}

/// The DER bytes inside the first PEM block with one of `labels`, however the text was mangled.
fn pem_block(text: &str, labels: &[&'static str]) -> Result<(&'static str, Vec<u8>), KeyError> {
    // Environment variables and one-line configs often carry `\n` as two characters.
    let text = text.replace("\\r\\n", "\n").replace("\\n", "\n").replace('\r', "\n");
    for &label in labels {
        let begin = format!("-----BEGIN {label}-----");
        let end = format!("-----END {label}-----");
        let Some(start) = text.find(&begin) else { continue };
        let after = &text[start + begin.len()..];
        let Some(stop) = after.find(&end) else { continue };
        let b64: String = after[..stop].chars().filter(|c| !c.is_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| KeyError::BadBase64)?;
        return Ok((label, der));
    }
    Err(KeyError::NoPem(labels[0]))
}

fn curve_mismatch(der: &[u8]) -> Option<KeyError> {
    let has = |oid: &[u8]| der.windows(oid.len()).any(|w| w == oid);
    if has(OID_SECP256K1) {
        None
    } else if has(OID_P256) {
        Some(KeyError::WrongCurve("NIST P-256 (prime256v1)"))
    } else if has(OID_P384) {
        Some(KeyError::WrongCurve("NIST P-384"))
    } else {
        None
    }
}

/// Loads a private key: SEC1 `EC PRIVATE KEY` (with or without a leading `EC PARAMETERS` block,
/// with a secret shorter than 32 bytes as the Python SDK writes it) or PKCS#8 `PRIVATE KEY`.
pub fn parse_private_key(text: &str) -> Result<SigningKey, KeyError> {
    let (label, der) = pem_block(text, &["EC PRIVATE KEY", "PRIVATE KEY"])?;
    if let Some(err) = curve_mismatch(&der) {
        return Err(err);
    }
    let secret = match label {
        "EC PRIVATE KEY" => k256::SecretKey::from_sec1_der(&der).map_err(|e| KeyError::Invalid(e.to_string()))?,
        _ => {
            use k256::pkcs8::DecodePrivateKey as _;
            k256::SecretKey::from_pkcs8_der(&der).map_err(|e| KeyError::Invalid(e.to_string()))?
        }
    };
    Ok(SigningKey::from(secret))
}

/// Loads an SPKI `PUBLIC KEY` (uncompressed or compressed point).
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, KeyError> {
    let (_, der) = pem_block(text, &["PUBLIC KEY"])?;
    if let Some(err) = curve_mismatch(&der) {
        return Err(err);
    }
    VerifyingKey::from_public_key_der(&der).map_err(|e| KeyError::Invalid(e.to_string()))
}

/// The private key as SEC1 PEM (`EC PRIVATE KEY`, with curve and public key), the format the
/// official SDK writes and reads.
pub fn private_key_pem(key: &SigningKey) -> Result<String, KeyError> {
    let secret = k256::SecretKey::from(key);
    let pem = secret.to_sec1_pem(LineEnding::LF).map_err(|e| KeyError::Invalid(e.to_string()))?;
    Ok(pem.to_string())
}

/// The public key as SPKI PEM with an uncompressed point, as the SDK writes it.
pub fn public_key_pem(key: &VerifyingKey) -> Result<String, KeyError> {
    key.to_public_key_pem(LineEnding::LF).map_err(|e| KeyError::Invalid(e.to_string()))
}

/// A short, stable fingerprint of a public key for logs (never the key itself).
pub fn fingerprint(key: &VerifyingKey) -> String {
    use sha2::Digest as _;
    let point = key.as_affine().to_sec1_point(false);
    let digest = sha2::Sha256::digest(point.as_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh random key.
pub fn generate() -> SigningKey {
    use k256::elliptic_curve::Generate as _;
    SigningKey::from(k256::SecretKey::generate_from_rng(&mut rand::rng()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SANDBOX_PUBLIC: &str = include_str!("../../tests/fixtures/vectors/starkbank-sandbox-public-key.pem");

    #[test]
    fn round_trips_generated_keys() {
        let key = generate();
        let pem = private_key_pem(&key).unwrap();
        assert!(pem.starts_with("-----BEGIN EC PRIVATE KEY-----"));
        let back = parse_private_key(&pem).unwrap();
        assert_eq!(back.to_bytes(), key.to_bytes());
        let public = public_key_pem(key.verifying_key()).unwrap();
        assert!(public.contains("MFYwEAYHKoZIzj0CAQYFK4EEAAoDQgAE"), "uncompressed SPKI like the SDK: {public}");
        assert_eq!(&parse_public_key(&public).unwrap(), key.verifying_key());
    }

    #[test]
    fn loads_mangled_pem_text() {
        let key = generate();
        let pem = private_key_pem(&key).unwrap();
        let variants = [
            format!("\n{pem}"),
            pem.replace('\n', "\r\n"),
            pem.replace('\n', "\\n"),
            pem.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n"),
            pem.replace('\n', " "),
            format!("-----BEGIN EC PARAMETERS-----\nBgUrgQQACg==\n-----END EC PARAMETERS-----\n{pem}"),
        ];
        for v in variants {
            assert_eq!(parse_private_key(&v).unwrap().to_bytes(), key.to_bytes(), "{v:?}");
        }
    }

    #[test]
    fn loads_the_sandbox_public_key() {
        let key = parse_public_key(SANDBOX_PUBLIC).unwrap();
        assert_eq!(fingerprint(&key).len(), 12);
    }

    #[test]
    fn refuses_p256_with_a_clear_reason() {
        // A P-256 private key made with `openssl ecparam -name prime256v1 -genkey -noout`.
        let p256 = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIJKsvVeSIeEZ8wCBEa1JCpL/f6hVJwwxvTg0IqPNGmy/oAoGCCqGSM49\nAwEHoUQDQgAE37VoQk3d/YmqRiVeJy5MnPjgcBO60wsHcfIcbpV+XD6mv1HdWJbu\nWYTKpTiRUhCYq7ihCvgOCjgXji0d44tkxQ==\n-----END EC PRIVATE KEY-----\n";
        assert_eq!(parse_private_key(p256).unwrap_err(), KeyError::WrongCurve("NIST P-256 (prime256v1)"));
        assert!(matches!(parse_private_key("hello"), Err(KeyError::NoPem(_))));
    }
}
