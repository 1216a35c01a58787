//! Money as people read it: integer cents written as Brazilian reais (`R$ 1.234,56`).
//!
//! Owns: the one way an amount is shown, in output, logs and reasons alike (the engines write
//! reasons with it, so it lives below `cmd`). Does not own: arithmetic on amounts (they stay
//! `i64` cents everywhere) or any other formatting.

/// Formats integer cents as `R$ 1.234,56`.
pub fn brl(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    let reais = (abs / 100).to_string();
    let mut grouped = String::new();
    for (i, ch) in reais.chars().enumerate() {
        if i > 0 && (reais.len() - i).is_multiple_of(3) {
            grouped.push('.');
        }
        grouped.push(ch);
    }
    format!("{sign}R$ {grouped},{:02}", abs % 100)
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_brazilian_reais() {
        assert_eq!(super::brl(0), "R$ 0,00");
        assert_eq!(super::brl(3619), "R$ 36,19");
        assert_eq!(super::brl(123456789), "R$ 1.234.567,89");
        assert_eq!(super::brl(-5), "-R$ 0,05");
    }
}
