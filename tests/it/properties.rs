//! Property tests: what parses or computes never panics and is always right.

use proptest::prelude::*;
use rand::SeedableRng as _;
use stark_sweep::starkbank::{event, keys, pyjson, verify};
use stark_sweep::sweep;

/// Arbitrary JSON values, including non-ASCII and astral strings and floats.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| serde_json::json!(f)),
        "\\PC{0,12}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("\\PC{0,8}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn canonical_form_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = pyjson::canonicalize(&bytes);
    }

    #[test]
    fn canonical_form_never_panics_on_json_like_text(text in r#"[\[\]{}",:0-9eE.+\- a-z\\u]{0,64}"#) {
        let _ = pyjson::canonicalize(text.as_bytes());
    }

    #[test]
    fn canonical_form_is_a_fixed_point(v in json_value()) {
        // dumps() is Python's output for this value; canonicalizing it changes nothing, and
        // canonicalizing any serialization of it (compact, pretty) gives the same bytes.
        let python = pyjson::dumps(&v);
        prop_assert_eq!(pyjson::canonicalize(python.as_bytes()), Some(python.clone()));
        let compact = serde_json::to_string(&v).unwrap();
        prop_assert_eq!(pyjson::canonicalize(compact.as_bytes()), Some(python.clone()));
        let pretty = serde_json::to_string_pretty(&v).unwrap();
        prop_assert_eq!(pyjson::canonicalize(pretty.as_bytes()), Some(python.clone()));
        prop_assert!(python.is_ascii());
    }

    #[test]
    fn event_parsing_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512), v in json_value()) {
        let _ = event::parse_body(&bytes);
        let wrapped = serde_json::json!({"event": v});
        let _ = event::parse_body(wrapped.to_string().as_bytes());
        let _ = event::summarize_event(&wrapped["event"]);
        let _ = sweep::effects_of("e", wrapped.to_string().as_bytes());
    }

    #[test]
    fn verification_never_panics(body in prop::collection::vec(any::<u8>(), 0..256), sig in "\\PC{0,120}") {
        let key = keys::parse_public_key(include_str!("../fixtures/vectors/starkbank-sandbox-public-key.pem")).unwrap();
        prop_assert!(verify::verify_body(&key, &body, &sig).is_err());
    }

    #[test]
    fn net_amount_and_target_are_right_for_any_invoice(amount in 0i64..10_000_000_000, fee in 0i64..1_000_000, attempt in 1u32..20, id in "[0-9]{16}") {
        let target = sweep::Target::default();
        match sweep::net_amount(amount, fee) {
            Some(net) => {
                prop_assert_eq!(net, amount - fee);
                prop_assert!(net > 0);
                let t = sweep::transfer_for(&target, &id, net, attempt);
                prop_assert_eq!(t.amount, amount - fee);
                prop_assert_eq!(t.bank_code.as_str(), "20018183");
                prop_assert_eq!(t.branch_code.as_str(), "0001");
                prop_assert_eq!(t.account_number.as_str(), "6341320293482496");
                prop_assert_eq!(t.name.as_str(), "Stark Bank S.A.");
                prop_assert_eq!(t.tax_id.as_str(), "20.018.183/0001-80");
                prop_assert_eq!(t.account_type.as_str(), "payment");
                prop_assert_eq!(t.external_id, Some(sweep::external_id(&id, attempt)));
            }
            None => prop_assert!(amount <= fee),
        }
    }

    #[test]
    fn cpf_generation_is_always_valid(seed in any::<u64>()) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for _ in 0..16 {
            let cpf = stark_sweep::people::random_cpf(&mut rng);
            prop_assert!(stark_sweep::people::is_valid_cpf(&cpf), "{}", cpf);
            let digits: Vec<char> = cpf.chars().filter(char::is_ascii_digit).collect();
            prop_assert_eq!(digits.len(), 11);
            prop_assert!(digits.iter().any(|d| *d != digits[0]));
        }
    }
}
