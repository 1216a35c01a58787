//! Every real, derived and negative Stark Bank webhook signature gets exactly the verdict the
//! official SDK gives it (`expected_valid`), through our verifier and its Python-form fallback.

use std::path::Path;

use stark_sweep::starkbank::{keys, pyjson, verify};

fn vectors() -> Vec<(String, serde_json::Value)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vectors");
    let mut out = Vec::new();
    for dir in ["real", "extra", "derived", "negative"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            out.push((
                format!("{dir}/{}", path.file_name().unwrap().to_string_lossy()),
                serde_json::from_str(&text).unwrap(),
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn every_vector_gets_the_sdk_verdict() {
    let pem = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vectors/starkbank-sandbox-public-key.pem"),
    )
    .unwrap();
    let key = keys::parse_public_key(&pem).unwrap();
    let all = vectors();
    assert!(all.len() >= 35, "expected the full vector set, found {}", all.len());
    let mut wrong = Vec::new();
    for (name, v) in &all {
        let body = v["body"].as_str().unwrap();
        let sig = v["signature"].as_str().unwrap();
        let expected = v["expected_valid"].as_bool().unwrap();
        let got = verify::verify_body(&key, body.as_bytes(), sig);
        if got.is_ok() != expected {
            wrong.push(format!("{name}: expected {expected}, got {got:?}"));
        }
        if expected {
            // The path through which it verifies matches the recorded facts.
            let raw = v["verifies_raw"].as_bool().unwrap();
            assert_eq!(matches!(got, Ok(verify::Signed::Raw)), raw, "{name}");
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn python_form_matches_recorded_normalization() {
    for (name, v) in vectors() {
        let body = v["body"].as_str().unwrap();
        if v.get("body_is_python_normalized_form").and_then(|b| b.as_bool()) == Some(true) {
            assert_eq!(pyjson::canonicalize(body.as_bytes()).as_deref(), Some(body), "{name}");
        }
    }
}
