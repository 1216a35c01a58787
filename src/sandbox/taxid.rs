//! Brazilian tax ids as the API checks them: CPF (11 digits) and CNPJ (14 digits), with or
//! without punctuation, mod-11 check digits, all-equal digits refused; returned formatted.
//! Owns validation and formatting only (the alphanumeric CNPJ is not supported).
//!
//! A second implementation of the CPF rule in `people`, on purpose: the emulator checks the
//! payers the client generates as the real API would, so it shares no tax-id code with the
//! client (a wrong check digit there must be refused here, not agreed with).

/// The formatted form (`337.451.076-08`, `20.018.183/0001-80`) of a valid CPF or CNPJ.
pub fn normalize(text: &str) -> Option<String> {
    if !text.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '/' | ' ')) {
        return None;
    }
    let digits: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.iter().all(|&d| d == digits[0]) {
        return None;
    }
    let s: String = digits.iter().map(|d| char::from(b'0' + *d as u8)).collect();
    match digits.len() {
        11 if check(&digits, &[10, 9, 8, 7, 6, 5, 4, 3, 2], &[11, 10, 9, 8, 7, 6, 5, 4, 3, 2]) => {
            Some(format!("{}.{}.{}-{}", &s[0..3], &s[3..6], &s[6..9], &s[9..11]))
        }
        14 if check(&digits, &[5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2], &[6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2]) => {
            Some(format!("{}.{}.{}/{}-{}", &s[0..2], &s[2..5], &s[5..8], &s[8..12], &s[12..14]))
        }
        _ => None,
    }
}

fn check(digits: &[u32], w1: &[u32], w2: &[u32]) -> bool {
    let dv = |weights: &[u32]| {
        let sum: u32 = digits.iter().zip(weights).map(|(d, w)| d * w).sum();
        let r = sum % 11;
        if r < 2 { 0 } else { 11 - r }
    };
    let n = w1.len();
    dv(w1) == digits[n] && dv(w2) == digits[n + 1]
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn validates_and_formats() {
        assert_eq!(normalize("33745107608").as_deref(), Some("337.451.076-08"));
        assert_eq!(normalize("337.451.076-08").as_deref(), Some("337.451.076-08"));
        assert_eq!(normalize("20018183000180").as_deref(), Some("20.018.183/0001-80"));
        assert_eq!(normalize("20.018.183/0001-80").as_deref(), Some("20.018.183/0001-80"));
        assert_eq!(normalize("337.451.076-09"), None);
        assert_eq!(normalize("000.000.000-00"), None);
        assert_eq!(normalize("00.000.000/0000-00"), None);
        assert_eq!(normalize("abc"), None);
        assert_eq!(normalize(""), None);
        assert_eq!(normalize("123"), None);
    }
}
