//! Keeping payers' personal data (names, CPFs) out of logs, error output and stored reasons.
//!
//! Stark Bank's error messages can echo request fields ("taxId 123.456.789-09 is not valid",
//! a name that was refused). Every message that came from Stark Bank is passed through
//! `tax_ids` before it is kept anywhere; where the caller knows the payers of a request (issuing
//! invoices), a `Redactor` also removes their names and tax ids, in any spelling.
//!
//! Owns: the patterns. Does not own: where text goes. It lives in `starkbank` because what it
//! cleans is Stark Bank's answers (and it spells names as Stark Bank escapes them, `pyjson`).

/// What a redacted tax id reads as.
pub const TAX_ID: &str = "[tax id]";
/// What a redacted name reads as.
pub const NAME: &str = "[payer]";

/// Replaces every run that looks like a CPF or CNPJ (11 or 14 digits, optionally punctuated
/// with `.`, `-` and `/`, not part of a longer number) with `[tax id]`.
pub fn tax_ids(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() || (i > 0 && chars[i - 1].is_ascii_digit()) {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        // A run of digits and separators, ending on a digit.
        let mut end = i;
        let mut last_digit = i;
        let mut digits = 0;
        while end < chars.len() && (chars[end].is_ascii_digit() || matches!(chars[end], '.' | '-' | '/')) {
            if chars[end].is_ascii_digit() {
                digits += 1;
                last_digit = end;
            }
            end += 1;
        }
        if matches!(digits, 11 | 14) {
            out.push_str(TAX_ID);
        } else {
            out.extend(&chars[i..=last_digit]);
        }
        i = last_digit + 1;
    }
    out
}

/// Removes known names and tax ids (in any case, and tax ids with or without punctuation),
/// then anything else that looks like a tax id.
#[derive(Debug, Default, Clone)]
pub struct Redactor {
    names: Vec<String>,
}

impl Redactor {
    /// `names`: the payers' names in the request whose answer is being redacted.
    pub fn new(names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let mut names: Vec<String> =
            names.into_iter().map(Into::into).filter(|n: &String| !n.trim().is_empty()).collect();
        // Longest first, so "Ana Lima Souza" goes before "Ana Lima".
        names.sort_by_key(|n| std::cmp::Reverse(n.chars().count()));
        Self { names }
    }

    pub fn apply(&self, text: &str) -> String {
        let mut out = text.to_string();
        for name in &self.names {
            out = replace_case_insensitive(&out, name, NAME);
            // Stark Bank's JSON-escaped spelling of a non-ASCII name.
            let escaped = super::pyjson::dumps(&serde_json::Value::String(name.clone()));
            let escaped = escaped.trim_matches('"');
            if escaped != name {
                out = replace_case_insensitive(&out, escaped, NAME);
            }
        }
        tax_ids(&out)
    }
}

fn replace_case_insensitive(haystack: &str, needle: &str, with: &str) -> String {
    let lower_hay = haystack.to_lowercase();
    let lower_needle = needle.to_lowercase();
    // Lowercasing may change byte lengths for some scripts: fall back to exact matching then.
    if lower_hay.len() != haystack.len() || lower_needle.len() != needle.len() {
        return haystack.replace(needle, with);
    }
    let mut out = String::with_capacity(haystack.len());
    let mut rest = 0;
    for (at, _) in lower_hay.match_indices(&lower_needle) {
        if at < rest {
            continue;
        }
        out.push_str(&haystack[rest..at]);
        out.push_str(with);
        rest = at + needle.len();
    }
    out.push_str(&haystack[rest..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tax_ids_in_any_spelling_are_removed_and_other_numbers_kept() {
        assert_eq!(tax_ids("taxId 337.451.076-08 is invalid"), "taxId [tax id] is invalid");
        assert_eq!(tax_ids("taxId 33745107608."), "taxId [tax id].");
        assert_eq!(tax_ids("cnpj 20.018.183/0001-80, ok"), "cnpj [tax id], ok");
        assert_eq!(tax_ids("invoice 5941925571985408 (16 digits)"), "invoice 5941925571985408 (16 digits)");
        assert_eq!(tax_ids("at 2026-12-02T10:21:42, 3619 cents"), "at 2026-12-02T10:21:42, 3619 cents");
        assert_eq!(tax_ids("Element 3: x"), "Element 3: x");
    }

    #[test]
    fn known_names_go_in_every_spelling() {
        let r = Redactor::new(["João Conceição", "Ana Müller"]);
        assert_eq!(r.apply("name JOÃO CONCEIÇÃO refused"), "name [payer] refused");
        assert_eq!(r.apply(r#"{"name": "Jo\u00e3o Concei\u00e7\u00e3o"}"#), r#"{"name": "[payer]"}"#);
        assert_eq!(r.apply("ana müller, 337.451.076-08"), "[payer], [tax id]");
    }
}
