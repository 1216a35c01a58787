//! Conformance with the official Stark Bank libraries, which are the oracle: the pinned
//! `starkbank` SDK and its `ellipticcurve` ECDSA library (tests/python/requirements.txt), and
//! openssl for key files. Each test fails, never skips, when an oracle is missing.
//!
//! - Rust signatures verify with `ellipticcurve.Ecdsa.verify`, byte for byte the same message.
//! - The library's signatures (half turned high-S, which it accepts) verify in Rust, as request
//!   signatures and as webhook bodies; tampered ones fail on both sides.
//! - Keys from `starkbank.key.create()`, openssl (three shapes) and `stark-sweep keygen` load,
//!   and derive the public key the other tools derive; a keygen key works as an SDK Project.
//! - `starkbank.event.parse` and our `verify_body` give the same verdict on every vector.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use sha2::Digest as _;
use stark_sweep::starkbank::{event, keys, sign, verify};

use crate::util::{self, run_python};

fn write_json(path: &Path, value: &Value) {
    std::fs::write(path, serde_json::to_vec(value).unwrap()).unwrap();
}

fn parse_stdout(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("python printed no JSON ({e}):\n{text}"))
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Request bodies of every awkward kind: empty, ASCII, raw UTF-8, `\u` escapes, emoji (4-byte
/// UTF-8 and surrogate-pair escapes), control characters, JSON inside JSON, huge.
fn bodies(count: usize) -> Vec<String> {
    let invoice = json!({"invoices": [{"amount": 100, "name": "João Ção", "taxId": "012.345.678-90",
        "tags": ["stark-sweep", "slot-3"], "due": "2026-12-01T00:00:00+00:00"}]});
    let fixed: Vec<String> = vec![
        String::new(),
        "{}".into(),
        serde_json::to_string(&invoice).unwrap(),
        stark_sweep::starkbank::pyjson::dumps(&invoice),
        r#"{"name": "S\u00e3o Paulo \ud83d\udcb8"}"#.into(),
        "💸🏦✅ 👩🏽‍💻 🇧🇷".into(),
        serde_json::to_string(&json!({"quoted": "she said \"hi\"\n\t\\", "ctl": "\u{1}\u{1f}\u{7f}"})).unwrap(),
        serde_json::to_string(&json!({"nested": serde_json::to_string(&invoice).unwrap()})).unwrap(),
        "\u{2028}\u{2029}\r\n line separators and CRLF\r\n".into(),
        "日本語のテキスト、中文文本، النص العربي, עברית".into(),
        "a".repeat(300_000),
        serde_json::to_string(&json!({"transfers": (0..100).map(|i| json!({"amount": i + 1,
            "name": format!("Favorecido nº {i} ação"), "externalId": format!("stark-sweep-{i}")})).collect::<Vec<_>>()}))
        .unwrap(),
        " ".into(),
        "null".into(),
    ];
    (0..count)
        .map(|i| {
            let base = &fixed[i % fixed.len()];
            if i < fixed.len() { base.clone() } else { format!("{base}{{\"n\": {i}, \"s\": \"ñ{i}💰\"}}") }
        })
        .collect()
}

#[test]
fn rust_signatures_verify_with_the_official_library() {
    let dir = tempfile::tempdir().unwrap();
    let signers: Vec<_> = (0..4).map(|_| keys::generate()).collect();
    let access_ids = ["project/4690000000000000", "project/1", "organization/5/workspace/6"];
    let mut items = Vec::new();
    let mut expected_valid = 0;
    for (i, body) in bodies(240).iter().enumerate() {
        let key = &signers[i % signers.len()];
        let access_id = access_ids[i % access_ids.len()];
        let access_time =
            if i % 2 == 0 { format!("17949{i:05}") } else { format!("17949{i:05}.{:06}", i * 7919 % 1_000_000) };
        let message = sign::request_message(access_id, &access_time, body.as_bytes());
        let signature = sign::sign(key, &message);
        let public_key_pem = keys::public_key_pem(key.verifying_key()).unwrap();
        let text = String::from_utf8(message).unwrap();
        let item = |message: &str, expect_valid: bool| {
            json!({"message": message, "message_sha256": hex(&sha2::Sha256::digest(message.as_bytes())),
                "signature": signature, "public_key_pem": public_key_pem, "expect_valid": expect_valid})
        };
        items.push(item(&text, true));
        expected_valid += 1;
        if i % 10 == 0 {
            // The same signature over a message one byte longer must not verify.
            items.push(item(&format!("{text} "), false));
        }
    }
    let input = dir.path().join("rust-signatures.json");
    write_json(&input, &json!({ "items": items }));
    let report = parse_stdout(&run_python("verify_rust_signatures.py", &[path_str(&input)], &[]));
    assert_eq!(report["failures"], json!([]), "the official library disagrees");
    assert_eq!(report["checked"], items.len());
    assert_eq!(report["valid"], expected_valid);
    assert!(expected_valid >= 200);
}

#[test]
fn official_signatures_verify_in_rust_including_high_s_and_tampered_ones_fail() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sdk-signatures.json");
    run_python("sdk_signatures.py", &[path_str(&out), "200"], &[]);
    let data: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let items = data["items"].as_array().unwrap();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut wrong = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let key = keys::parse_public_key(item["public_key_pem"].as_str().unwrap()).unwrap();
        let message = item["message"].as_str().unwrap();
        let signed = item["signed"].as_str().unwrap();
        let signature = item["signature"].as_str().unwrap();
        let kind = item["kind"].as_str().unwrap();
        let high = item["high_s"].as_bool().unwrap();
        *counts.entry(kind.to_string()).or_default() += 1;
        if high && kind != "tampered" {
            *counts.entry("high_s".into()).or_default() += 1;
            let der = base64_decode(signature);
            let sig = k256::ecdsa::Signature::from_der(&der).unwrap();
            assert_ne!(sig.normalize_s(), sig, "item {i} was meant to be high-S");
        }
        let direct = sign::verify(&key, message.as_bytes(), signature);
        let body = verify::verify_body(&key, message.as_bytes(), signature);
        let ok = match kind {
            "request" => direct.is_ok(),
            "webhook" => direct.is_ok() && matches!(body, Ok(verify::Signed::Raw)),
            "webhook-compact" => {
                sign::verify(&key, signed.as_bytes(), signature).is_ok()
                    && matches!(&body, Ok(verify::Signed::Canonical(text)) if text == signed)
            }
            "tampered" => {
                direct == Err(sign::SignatureError::Mismatch) && matches!(body, Err(verify::WebhookAuthError::Invalid))
            }
            other => panic!("unknown kind {other}"),
        };
        if !ok {
            wrong.push(format!("item {i} ({kind}, high_s={high}): sign::verify {direct:?}, verify_body {body:?}"));
        }
    }
    assert!(wrong.is_empty(), "{} disagreements:\n{}", wrong.len(), wrong.join("\n"));
    let valid = items.len() - counts["tampered"];
    assert!(valid >= 200, "{counts:?}");
    assert!(counts["high_s"] >= 100, "{counts:?}");
    assert!(counts["tampered"] >= 40, "{counts:?}");
    assert!(counts["webhook"] >= 50 && counts["webhook-compact"] >= 50, "{counts:?}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).unwrap()
}

/// openssl is the system tool for key files; `scripts/test` installs it.
fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("openssl is needed for the key conformance tests ({e}); run scripts/test"));
    assert!(out.status.success(), "openssl {args:?}: {}", util::stderr(&out));
    util::stdout(&out)
}

fn keygen(dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let out = util::cmd(dir).args(["keygen", "--out", path_str(dir)]).output().unwrap();
    assert!(out.status.success(), "keygen: {}", util::stderr(&out));
    (dir.join("private-key.pem"), dir.join("public-key.pem"))
}

#[test]
fn keys_from_the_sdk_openssl_and_keygen_load_and_derive_the_same_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // The official SDK's own keys, one of them with a 31-byte secret.
    let listing = parse_stdout(&run_python("keys.py", &["sdk-keys", path_str(d), "6"], &[]));
    let sdk_keys = listing["keys"].as_array().unwrap();
    assert_eq!(sdk_keys.len(), 6);
    assert!(sdk_keys.iter().any(|k| k["secret_bytes"].as_u64().unwrap() < 32), "{listing}");
    for k in sdk_keys {
        let text = std::fs::read_to_string(k["file"].as_str().unwrap()).unwrap();
        assert!(text.starts_with("\n-----BEGIN EC PRIVATE KEY-----"), "the SDK's shape: {text:?}");
        for variant in [text.clone(), text.replace('\n', "\\n")] {
            let private = keys::parse_private_key(&variant)
                .unwrap_or_else(|e| panic!("SDK key with a {}-byte secret: {e}", k["secret_bytes"]));
            let expected = keys::parse_public_key(k["public_pem"].as_str().unwrap()).unwrap();
            assert_eq!(private.verifying_key(), &expected, "{}", k["file"]);
        }
    }

    // openssl, in the three shapes people have.
    let with_params = d.join("openssl-with-params.pem");
    let noout = d.join("openssl-noout.pem");
    let pkcs8 = d.join("openssl-pkcs8.pem");
    openssl(&["ecparam", "-name", "secp256k1", "-genkey", "-out", path_str(&with_params)]);
    openssl(&["ecparam", "-name", "secp256k1", "-genkey", "-noout", "-out", path_str(&noout)]);
    openssl(&["pkcs8", "-topk8", "-nocrypt", "-in", path_str(&noout), "-out", path_str(&pkcs8)]);
    assert!(std::fs::read_to_string(&with_params).unwrap().contains("-----BEGIN EC PARAMETERS-----"));
    assert!(std::fs::read_to_string(&pkcs8).unwrap().contains("-----BEGIN PRIVATE KEY-----"));

    // stark-sweep keygen.
    let (kg_private, kg_public) = keygen(&d.join("keygen"));

    let files = [&with_params, &noout, &pkcs8, &kg_private];
    let mut args = vec!["derive"];
    args.extend(files.iter().map(|p| path_str(p)));
    let sdk_derived = parse_stdout(&run_python("keys.py", &args, &[]));

    for file in files {
        let private = keys::parse_private_key(&std::fs::read_to_string(file).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let ours = keys::public_key_pem(private.verifying_key()).unwrap();
        let openssl_public = openssl(&["pkey", "-in", path_str(file), "-pubout"]);
        assert_eq!(ours, openssl_public, "{}: public key differs from openssl's", file.display());
        let sdk = &sdk_derived[path_str(file)];
        if file == &pkcs8 {
            // The official library reads only SEC1 `EC PRIVATE KEY`; we read PKCS#8 as well.
            assert!(sdk["error"].is_string(), "{sdk}");
        } else {
            let sdk_public = keys::parse_public_key(sdk["public_pem"].as_str().unwrap()).unwrap();
            assert_eq!(&sdk_public, private.verifying_key(), "{}: differs from the SDK's", file.display());
        }
    }
    let written = keys::parse_public_key(&std::fs::read_to_string(&kg_public).unwrap()).unwrap();
    let loaded = keys::parse_private_key(&std::fs::read_to_string(&kg_private).unwrap()).unwrap();
    assert_eq!(&written, loaded.verifying_key(), "keygen's two files belong together");
}

#[test]
fn keygen_key_works_as_an_official_sdk_project() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = keygen(&dir.path().join("keys"));
    let mut request_bodies = bodies(14);
    request_bodies.truncate(14);
    let bodies_file = dir.path().join("bodies.json");
    write_json(&bodies_file, &json!(request_bodies));
    let project_id = "4690000000000000";
    let report = parse_stdout(&run_python(
        "keys.py",
        &["project-sign", path_str(&private), path_str(&public), project_id, path_str(&bodies_file)],
        &[],
    ));
    assert_eq!(report["derived_matches"], true, "the SDK derives another public key from keygen's private key");
    let key = keys::parse_public_key(&std::fs::read_to_string(&public).unwrap()).unwrap();
    let requests = report["requests"].as_array().unwrap();
    assert_eq!(requests.len(), request_bodies.len());
    for (r, body) in requests.iter().zip(&request_bodies) {
        assert_eq!(r["access_id"], format!("project/{project_id}"));
        assert_eq!(r["body"].as_str().unwrap(), body);
        let message = sign::request_message(
            r["access_id"].as_str().unwrap(),
            r["access_time"].as_str().unwrap(),
            body.as_bytes(),
        );
        let signature = r["signature"].as_str().unwrap();
        assert_eq!(sign::verify(&key, &message, signature), Ok(()), "body {body:.60?}");
    }
}

#[test]
fn official_event_parse_agrees_with_verify_body_on_every_vector() {
    let root = util::fixture("vectors");
    let pem_path = root.join("starkbank-sandbox-public-key.pem");
    let key = keys::parse_public_key(&std::fs::read_to_string(&pem_path).unwrap()).unwrap();
    let mut files = Vec::new();
    for sub in ["real", "extra", "derived", "negative"] {
        for entry in std::fs::read_dir(root.join(sub)).unwrap() {
            files.push(entry.unwrap().path());
        }
    }
    files.sort();
    assert!(files.len() >= 35, "expected the full vector set, found {}", files.len());
    let mut args = vec![path_str(&pem_path)];
    args.extend(files.iter().map(|p| path_str(p)));
    let verdicts = parse_stdout(&run_python("event_parse.py", &args, &[]));
    assert!(verdicts["_fetches"].as_u64().unwrap() >= 1, "the SDK's key fetch was not the mocked one");

    let mut wrong = Vec::new();
    let (mut valid, mut events) = (0, 0);
    for file in &files {
        let vector: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        let body = vector["body"].as_str().unwrap();
        let signature = vector["signature"].as_str().unwrap();
        let sdk = &verdicts[path_str(file)];
        let sdk_valid = sdk["valid"].as_bool().unwrap();
        let ours = verify::verify_body(&key, body.as_bytes(), signature);
        let recorded = vector["expected_valid"].as_bool().unwrap();
        if sdk_valid != ours.is_ok() || sdk_valid != recorded {
            wrong.push(format!("{}: SDK {sdk}, ours {ours:?}, recorded {recorded}", file.display()));
            continue;
        }
        valid += usize::from(sdk_valid);
        if let Some(id) = sdk["event_id"].as_str() {
            // Where the SDK builds an event, we read the same event id from the same bytes.
            events += 1;
            let summary = event::parse_body(body.as_bytes())
                .unwrap_or_else(|e| panic!("{}: the SDK parsed it, we did not: {e}", file.display()));
            assert_eq!(summary.id, id, "{}", file.display());
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(valid >= 25 && events >= 20, "valid {valid}, events {events}");
}

/// The SDK re-verifies a webhook over `json.dumps(json.loads(body), sort_keys=True)`; our
/// `pyjson::canonicalize` must produce those exact bytes (or refuse where Python raises), or
/// `verify_body` accepts less, or more, than `event.parse`.
#[test]
fn canonical_json_matches_python_on_random_texts() {
    let texts = parse_stdout(&run_python("canonical_json.py", &["4000", "20261129"], &[]));
    let texts = texts.as_array().unwrap();
    let mut wrong = Vec::new();
    let mut refused = 0;
    for t in texts {
        let text = t["text"].as_str().unwrap();
        let expected = t["canonical"].as_str();
        refused += usize::from(expected.is_none());
        let ours = stark_sweep::starkbank::pyjson::canonicalize(text.as_bytes());
        if ours.as_deref() != expected {
            wrong.push(format!("{text:?}\n  python: {expected:?}\n  ours:   {ours:?}"));
        }
    }
    assert!(wrong.is_empty(), "{} of {} differ:\n{}", wrong.len(), texts.len(), wrong.join("\n"));
    assert!(refused >= 100, "the refusals are exercised too ({refused})");
}
