//! Random Brazilian payers: a realistic full name (fake's pt_BR locale) and a valid CPF.
//!
//! Owns: CPF generation, validation and formatting (mod-11 check digits, never all digits
//! equal), and name generation. Does not own: who is invoiced or for how much.
//!
//! The emulator checks tax ids with its own code (`sandbox::taxid`), deliberately not this
//! module: it is the oracle for the CPFs generated here, so the two must not share a bug.

use fake::Fake as _;
use fake::faker::name::raw::{FirstName, LastName};
use fake::locales::PT_BR;
use rand::RngExt as _;

/// A payer to invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub name: String,
    /// Formatted `000.000.000-00`.
    pub cpf: String,
}

/// The two CPF check digits of nine base digits (Receita Federal's mod-11 rule).
fn cpf_check_digits(base: &[u8; 9]) -> (u8, u8) {
    let digit = |sum: u32| {
        let r = (sum % 11) as u8;
        if r < 2 { 0 } else { 11 - r }
    };
    let d1 = digit(base.iter().enumerate().map(|(i, &d)| u32::from(d) * (10 - i as u32)).sum());
    let d2 =
        digit(base.iter().enumerate().map(|(i, &d)| u32::from(d) * (11 - i as u32)).sum::<u32>() + u32::from(d1) * 2);
    (d1, d2)
}

/// A random valid CPF, formatted.
pub fn random_cpf<R: rand::Rng + ?Sized>(rng: &mut R) -> String {
    loop {
        let mut base = [0u8; 9];
        for d in &mut base {
            *d = rng.random_range(0..10);
        }
        // All-equal digits pass the arithmetic but are invalid CPFs.
        if base.iter().all(|&d| d == base[0]) {
            continue;
        }
        let (d1, d2) = cpf_check_digits(&base);
        let b: String = base.iter().map(|d| char::from(b'0' + d)).collect();
        return format!("{}.{}.{}-{}{}", &b[0..3], &b[3..6], &b[6..9], d1, d2);
    }
}

/// Whether `text` (formatted or bare) is a valid CPF.
pub fn is_valid_cpf(text: &str) -> bool {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_digit).map(|b| b - b'0').collect();
    let only_allowed = text.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'-');
    if !only_allowed || digits.len() != 11 || digits.iter().all(|&d| d == digits[0]) {
        return false;
    }
    let mut base = [0u8; 9];
    base.copy_from_slice(&digits[..9]);
    cpf_check_digits(&base) == (digits[9], digits[10])
}

/// A realistic full name: a first name and one or two surnames, as is common in Brazil.
pub fn random_name<R: rand::Rng + ?Sized>(rng: &mut R) -> String {
    let first: String = FirstName(PT_BR).fake_with_rng(rng);
    let last: String = LastName(PT_BR).fake_with_rng(rng);
    if rng.random_bool(0.6) {
        let mut second: String = LastName(PT_BR).fake_with_rng(rng);
        while second == last {
            second = LastName(PT_BR).fake_with_rng(rng);
        }
        format!("{first} {second} {last}")
    } else {
        format!("{first} {last}")
    }
}

/// `n` people whose names and CPFs differ from each other and from `taken` (names already
/// used in this campaign).
pub fn distinct_people<R: rand::Rng + ?Sized>(rng: &mut R, n: usize, taken: &[String]) -> Vec<Person> {
    let mut names: std::collections::HashSet<String> = taken.iter().cloned().collect();
    let mut cpfs = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let name = random_name(rng);
        let cpf = random_cpf(rng);
        if names.contains(&name) || cpfs.contains(&cpf) {
            continue;
        }
        names.insert(name.clone());
        cpfs.insert(cpf.clone());
        out.push(Person { name, cpf });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_cpfs_validate() {
        // Published examples with correct check digits, and their corruptions.
        assert!(is_valid_cpf("337.451.076-08"));
        assert!(is_valid_cpf("52998224725"));
        assert!(!is_valid_cpf("529.982.247-24"));
        assert!(!is_valid_cpf("111.111.111-11"));
        assert!(!is_valid_cpf("000.000.000-00"));
        assert!(!is_valid_cpf("5299822472"));
        assert!(!is_valid_cpf("abc"));
    }

    #[test]
    fn generated_people_are_valid_and_distinct() {
        let mut rng = rand::rng();
        let taken = vec!["Ana Souza".to_string()];
        let people = distinct_people(&mut rng, 500, &taken);
        let mut names = std::collections::HashSet::new();
        for p in &people {
            assert!(is_valid_cpf(&p.cpf), "{}", p.cpf);
            assert!(p.name.split(' ').count() >= 2, "{}", p.name);
            assert!(names.insert(p.name.clone()));
            assert_ne!(p.name, "Ana Souza");
        }
    }
}
