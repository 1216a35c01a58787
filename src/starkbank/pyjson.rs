//! Python's `json.dumps(json.loads(text), sort_keys=True)`, byte for byte.
//!
//! Stark Bank signs webhook bodies in that form, and the official SDK, when a signature does not
//! verify over the raw body, retries over this canonical form. We need the same function to accept
//! what the SDK accepts, and the emulator needs it to produce bodies the way Stark Bank does.
//!
//! Owns: a small JSON reader with Python's rules (lone surrogates kept, `NaN`/`Infinity` accepted,
//! integers of any size, strict control characters) and the writer (`", "` and `": "` separators,
//! keys sorted by code point, `\uXXXX` escapes in lowercase hex, Python's float `repr`).
//! Does not own: deciding which form a signature covers (see `verify`).

use serde_json::Value;

/// Nesting deeper than this is refused instead of risking the stack. Python itself gives up at
/// about 1000 levels with a `RecursionError`, which the SDK treats as a failed verification too.
const MAX_DEPTH: usize = 512;

/// CPython refuses to convert integers longer than this many digits (`sys.int_info`).
const MAX_INT_DIGITS: usize = 4300;

/// A JSON value as Python sees it after `json.loads`.
#[derive(Debug, Clone, PartialEq)]
enum Py {
    Null,
    Bool(bool),
    /// Integer digits exactly as written, with `-0` already folded to `0`.
    Int(String),
    Float(f64),
    /// Code points; lone surrogates (0xD800..=0xDFFF) are kept as Python keeps them.
    Str(Vec<u32>),
    List(Vec<Py>),
    /// Keys in insertion order; a repeated key replaces the earlier value, as in a dict.
    Dict(Vec<(Vec<u32>, Py)>),
}

/// The canonical form of `text`, or `None` when Python's `json.loads` would raise.
pub fn canonicalize(text: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(text).ok()?;
    let mut reader = Reader { s: text.as_bytes(), i: 0 };
    reader.skip_ws();
    let value = reader.value(0)?;
    reader.skip_ws();
    if reader.i != reader.s.len() {
        return None;
    }
    let mut out = String::with_capacity(text.len() + 16);
    write_py(&value, &mut out);
    Some(out)
}

/// Serializes a `serde_json::Value` the way Python's `json.dumps(obj, sort_keys=True)` would
/// serialize the equivalent Python object (floats stay floats: `2.0`, not `2`).
pub fn dumps(value: &Value) -> String {
    let mut out = String::new();
    write_serde(value, &mut out);
    out
}

fn write_serde(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else {
                out.push_str(&float_repr(n.as_f64().unwrap_or(f64::NAN)));
            }
        }
        Value::String(s) => {
            let cps: Vec<u32> = s.chars().map(u32::from).collect();
            write_str(&cps, out);
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_serde(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(Vec<u32>, &Value)> =
                map.iter().map(|(k, v)| (k.chars().map(u32::from).collect(), v)).collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_str(k, out);
                out.push_str(": ");
                write_serde(v, out);
            }
            out.push('}');
        }
    }
}

fn write_py(value: &Py, out: &mut String) {
    match value {
        Py::Null => out.push_str("null"),
        Py::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Py::Int(digits) => out.push_str(digits),
        Py::Float(f) => out.push_str(&float_repr(*f)),
        Py::Str(cps) => write_str(cps, out),
        Py::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_py(item, out);
            }
            out.push(']');
        }
        Py::Dict(entries) => {
            let mut sorted: Vec<&(Vec<u32>, Py)> = entries.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            out.push('{');
            for (i, (k, v)) in sorted.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_str(k, out);
                out.push_str(": ");
                write_py(v, out);
            }
            out.push('}');
        }
    }
}

/// `ensure_ascii=True` string escaping.
fn write_str(cps: &[u32], out: &mut String) {
    out.push('"');
    for &c in cps {
        match c {
            0x22 => out.push_str("\\\""),
            0x5c => out.push_str("\\\\"),
            0x0a => out.push_str("\\n"),
            0x0d => out.push_str("\\r"),
            0x09 => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            0x20..=0x7e => out.push(char::from(c as u8)),
            0x10000.. => {
                let v = c - 0x10000;
                let hi = 0xd800 | ((v >> 10) & 0x3ff);
                let lo = 0xdc00 | (v & 0x3ff);
                out.push_str(&format!("\\u{hi:04x}\\u{lo:04x}"));
            }
            _ => out.push_str(&format!("\\u{c:04x}")),
        }
    }
    out.push('"');
}

/// Python's `repr(float)`: the shortest digits that round-trip, in fixed notation for decimal
/// exponents -4..16 (with `.0` when there is no fraction) and `1e+16` style outside it.
pub fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.to_string();
    }
    // `{:e}` gives the shortest round-trip digits: "1.2345e-5", "1e16", "-2.5e0". When two
    // candidates of that length are equally near the exact value, Rust rounds the tie up while
    // Python (David Gay's dtoa) rounds it to even: -28082684949261.3125 is `...261.313` in Rust
    // and `...261.312` in Python. Re-format with that many digits, which Rust rounds exactly
    // and half-to-even, as Python does.
    let shortest = format!("{:e}", f);
    let significant = shortest.split('e').next().unwrap_or_default().chars().filter(char::is_ascii_digit).count();
    let sci = format!("{:.*e}", significant.saturating_sub(1), f);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let body = if point <= 0 {
            format!("0.{}{}", "0".repeat((-point) as usize), digits)
        } else if point as usize >= digits.len() {
            format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
        } else {
            format!("{}.{}", &digits[..point as usize], &digits[point as usize..])
        };
        format!("{sign}{body}")
    } else {
        let mant = if digits.len() > 1 { format!("{}.{}", &digits[..1], &digits[1..]) } else { digits };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{mant}e{esign}{:02}", exp.abs())
    }
}

struct Reader<'a> {
    s: &'a [u8],
    i: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &str) -> bool {
        if self.s[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Option<Py> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'{' => self.dict(depth),
            b'[' => self.list(depth),
            b'"' => self.string().map(Py::Str),
            b'n' if self.eat("null") => Some(Py::Null),
            b't' if self.eat("true") => Some(Py::Bool(true)),
            b'f' if self.eat("false") => Some(Py::Bool(false)),
            b'N' if self.eat("NaN") => Some(Py::Float(f64::NAN)),
            b'I' if self.eat("Infinity") => Some(Py::Float(f64::INFINITY)),
            b'-' if self.eat("-Infinity") => Some(Py::Float(f64::NEG_INFINITY)),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn dict(&mut self, depth: usize) -> Option<Py> {
        self.i += 1;
        let mut entries: Vec<(Vec<u32>, Py)> = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Some(Py::Dict(entries));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return None;
            }
            let key = self.string()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return None;
            }
            self.i += 1;
            self.skip_ws();
            let value = self.value(depth + 1)?;
            match entries.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => entries.push((key, value)),
            }
            self.skip_ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(Py::Dict(entries));
                }
                _ => return None,
            }
        }
    }

    fn list(&mut self, depth: usize) -> Option<Py> {
        self.i += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Some(Py::List(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(Py::List(items));
                }
                _ => return None,
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.s.get(self.i..self.i + 4)?;
        let h = std::str::from_utf8(h).ok()?;
        if !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.i += 4;
        u32::from_str_radix(h, 16).ok()
    }

    fn string(&mut self) -> Option<Vec<u32>> {
        self.i += 1; // opening quote
        let mut out = Vec::new();
        loop {
            let b = self.peek()?;
            match b {
                b'"' => {
                    self.i += 1;
                    return Some(out);
                }
                b'\\' => {
                    self.i += 1;
                    let e = self.peek()?;
                    self.i += 1;
                    let c = match e {
                        b'"' => 0x22,
                        b'\\' => 0x5c,
                        b'/' => 0x2f,
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => 0x0a,
                        b'r' => 0x0d,
                        b't' => 0x09,
                        b'u' => {
                            let c = self.hex4()?;
                            if (0xd800..0xdc00).contains(&c) && self.s[self.i..].starts_with(b"\\u") {
                                let save = self.i;
                                self.i += 2;
                                match self.hex4() {
                                    Some(lo) if (0xdc00..0xe000).contains(&lo) => {
                                        0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00)
                                    }
                                    _ => {
                                        self.i = save;
                                        c
                                    }
                                }
                            } else {
                                c
                            }
                        }
                        _ => return None,
                    };
                    out.push(c);
                }
                0x00..=0x1f => return None, // strict mode: raw control characters are refused
                _ => {
                    // The input is valid UTF-8; take one whole character.
                    let rest = std::str::from_utf8(&self.s[self.i..]).ok()?;
                    let ch = rest.chars().next()?;
                    self.i += ch.len_utf8();
                    out.push(u32::from(ch));
                }
            }
        }
    }

    fn number(&mut self) -> Option<Py> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                while matches!(self.peek(), Some(b'0'..=b'9')) {
                    self.i += 1;
                }
            }
            _ => return None,
        }
        let mut is_float = false;
        if self.peek() == Some(b'.') && matches!(self.s.get(self.i + 1), Some(b'0'..=b'9')) {
            is_float = true;
            self.i += 1;
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.i += 1;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            let save = self.i;
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if matches!(self.peek(), Some(b'0'..=b'9')) {
                is_float = true;
                while matches!(self.peek(), Some(b'0'..=b'9')) {
                    self.i += 1;
                }
            } else {
                // Python's number pattern simply stops before a dangling exponent.
                self.i = save;
            }
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).ok()?;
        if is_float {
            text.parse::<f64>().ok().map(Py::Float)
        } else {
            let digits = text.trim_start_matches('-');
            if digits.len() > MAX_INT_DIGITS {
                return None;
            }
            Some(Py::Int(if digits == "0" { "0".to_string() } else { text.to_string() }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        canonicalize(s.as_bytes()).unwrap_or_else(|| panic!("not JSON for Python: {s}"))
    }

    #[test]
    fn sorts_keys_and_uses_python_separators() {
        assert_eq!(
            canon(r#"{"b":1,"a":[1,2,{"d":null,"c":true}]}"#),
            r#"{"a": [1, 2, {"c": true, "d": null}], "b": 1}"#
        );
    }

    #[test]
    fn escapes_non_ascii_as_lowercase_utf16() {
        assert_eq!(canon(r#"{"name":"São João 😀"}"#), r#"{"name": "S\u00e3o Jo\u00e3o \ud83d\ude00"}"#);
        assert_eq!(canon(r#""\u00E9\/\b\f\n\r\t\u007f""#), r#""\u00e9/\b\f\n\r\t\u007f""#);
    }

    #[test]
    fn keeps_lone_surrogates_like_python() {
        assert_eq!(canon(r#""\ud800x\udfff""#), r#""\ud800x\udfff""#);
        assert_eq!(canon(r#""\uD83D\uDE00""#), r#""\ud83d\ude00""#);
    }

    #[test]
    fn formats_numbers_like_python_repr() {
        assert_eq!(
            canon("[10.0, 2.5, 1e16, 1E-5, 0.0001, -0, -0.0, 1.5e300, 123456789012345678901234567890]"),
            "[10.0, 2.5, 1e+16, 1e-05, 0.0001, 0, -0.0, 1.5e+300, 123456789012345678901234567890]"
        );
        assert_eq!(canon("[1e400, -1e400, NaN, 1e15, 100]"), "[Infinity, -Infinity, NaN, 1000000000000000.0, 100]");
        assert_eq!(float_repr(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(float_repr(123456789.125), "123456789.125");
    }

    /// Regression: the exact value is ...261.3125, a tie between two 17-digit forms; Python
    /// picks the even one. Found by the random conformance test against Python.
    #[test]
    fn float_repr_breaks_shortest_digit_ties_to_even_like_python() {
        assert_eq!(float_repr(-28082684949261.312), "-28082684949261.312");
        assert_eq!(canon("[-28082684949261.312, 28082684949261.3125]"), "[-28082684949261.312, 28082684949261.312]");
    }

    #[test]
    fn later_duplicate_key_wins() {
        assert_eq!(canon(r#"{"a":1,"b":2,"a":3}"#), r#"{"a": 3, "b": 2}"#);
    }

    #[test]
    fn refuses_what_python_refuses() {
        for bad in
            ["", "{", r#"{"a":1,}"#, "[1,]", "01", "\"a\nb\"", r#""\x""#, "{} x", "tru", "\u{feff}{}", r#"{1:2}"#]
        {
            assert_eq!(canonicalize(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(canonicalize(&[0xff, 0xfe]), None);
        let deep = "[".repeat(10_000);
        assert_eq!(canonicalize(deep.as_bytes()), None);
    }

    #[test]
    fn dumps_serde_values_like_python() {
        let v: Value = serde_json::json!({"z": 1, "fine": 2.0, "name": "José", "list": [0.5, -3]});
        assert_eq!(dumps(&v), r#"{"fine": 2.0, "list": [0.5, -3], "name": "Jos\u00e9", "z": 1}"#);
    }
}
