//! A validating scan of one JSON object, without building it: where its top-level fields
//! are, where it ends, and nothing else. `enrich` passes records through byte for byte, so it
//! only needs the key field's value, the span of the field it sets (if present), and the
//! position of the closing brace; the scan still checks the whole line is valid JSON
//! (RFC 8259: grammar, string escapes, no control characters in strings, numbers), with a
//! nesting limit of 128 as serde_json has.
//!
//! ```
//! use ringwait::enrich::scan::scan_object;
//! let line = br#"{"px":100.50, "key":"k:7"}"#;
//! let s = scan_object(line, b"key", b"value").unwrap();
//! let (start, end) = s.key.unwrap();
//! assert_eq!(&line[start..end], br#""k:7""#);
//! assert_eq!(line[s.close], b'}');
//! assert!(scan_object(br#"{"px":1.}"#, b"key", b"value").is_err());
//! ```

/// What the scan found in a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    /// Byte range of the last top-level value of the key field, if present.
    pub key: Option<(usize, usize)>,
    /// Byte range of the last top-level value of the field to set, if present.
    pub into: Option<(usize, usize)>,
    /// Index of the object's closing `}`.
    pub close: usize,
    /// The object has no field.
    pub empty: bool,
}

/// Why a line is not a JSON object: what, and at which byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError {
    /// What is wrong.
    pub what: &'static str,
    /// Byte offset where it was seen.
    pub at: usize,
    /// Valid JSON, but not an object: what it is.
    pub not_an_object: Option<&'static str>,
}

const MAX_DEPTH: usize = 128;

/// Scans `text`, which must be one JSON object (surrounded by optional whitespace), looking
/// for the top-level fields named `key` and `into` (as raw, unescaped-equal names: a field
/// name written with escapes is compared after unescaping).
pub fn scan_object(text: &[u8], key: &[u8], into: &[u8]) -> Result<Scanned, ScanError> {
    let mut s = Scanner::new(text);
    s.ws();
    if s.peek() != Some(b'{') {
        let start = s.i;
        validate(text)?;
        return Err(ScanError {
            what: "not an object",
            at: start,
            not_an_object: Some(kind_of(text.get(start).copied())),
        });
    }
    let mut found = Scanned {
        key: None,
        into: None,
        close: 0,
        empty: true,
    };
    let scanned = s.object(0, |name, span| {
        let (is_key, is_into) = names_match(name, key, into);
        if is_key {
            found.key = Some(span);
        }
        if is_into {
            found.into = Some(span);
        }
        found.empty = false;
    });
    if scanned.is_err() {
        return Err(s.error());
    }
    found.close = s.i - 1;
    s.end("trailing characters after the object")?;
    Ok(found)
}

/// Checks that `text` is one JSON value of any kind (surrounded by optional whitespace), as
/// serde_json would accept it.
///
/// ```
/// use ringwait::enrich::scan::validate;
/// assert!(validate(br#" {"a":[1,"x",null]} "#).is_ok());
/// assert!(validate(b"42").is_ok());
/// assert!(validate(b"[1,]").is_err());
/// assert!(validate(b"").is_err());
/// ```
pub fn validate(text: &[u8]) -> Result<(), ScanError> {
    let mut s = Scanner::new(text);
    s.ws();
    if s.value(0).is_err() {
        return Err(s.error());
    }
    s.end("trailing characters after the value")
}

/// What a JSON value starting with `first` is, as error messages name it.
pub(crate) fn kind_of(first: Option<u8>) -> &'static str {
    match first {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// Whether the raw (still escaped) field name `raw` names `key`, and whether it names
/// `into`: the name is looked at (and unescaped, when it has escapes) once for both.
fn names_match(raw: &[u8], key: &[u8], into: &[u8]) -> (bool, bool) {
    if !raw.contains(&b'\\') {
        return (same(raw, key), same(raw, into));
    }
    unescape(raw).map_or((false, false), |u| (u == key, u == into))
}

/// `a == b`, for the short slices field names are: a byte loop inlined here beats a call to
/// `memcmp` (2% of the reader's time on trading records, seen with `perf`).
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// The bytes a JSON string's contents (between the quotes, already validated) stand for,
/// as serde_json reads them; `None` for what it refuses (a lone surrogate).
pub(crate) fn unescape(raw: &[u8]) -> Option<Vec<u8>> {
    let quoted = [&b"\""[..], raw, b"\""].concat();
    serde_json::from_slice::<String>(&quoted)
        .ok()
        .map(String::into_bytes)
}

/// Length of the run of plain string bytes (not `"`, `\\` or a control character) at the
/// start of `b`: eight bytes at a time, then one at a time.
#[inline]
fn plain_run(b: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while let Some(word) = b.get(i..i + 8) {
        let x = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        // A high bit marks a byte that is zero in `quote`/`slash`, or below 0x20 in `x`. A
        // borrow can only mark a byte after a real match, so the lowest mark is exact.
        let quote = x ^ (ONES * u64::from(b'"'));
        let slash = x ^ (ONES * u64::from(b'\\'));
        let found = (quote.wrapping_sub(ONES) & !quote)
            | (slash.wrapping_sub(ONES) & !slash)
            | (x.wrapping_sub(ONES * 0x20) & !x);
        let found = found & HIGHS;
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

/// A scan failed; the scanner holds what and where (kept out of the hot path's return
/// values, which stay a register wide).
struct Fail;

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    /// The first failure: what, and at which byte.
    error: std::cell::Cell<(&'static str, usize)>,
}

impl<'a> Scanner<'a> {
    #[inline]
    fn new(b: &'a [u8]) -> Self {
        Scanner {
            b,
            i: 0,
            error: std::cell::Cell::new(("", 0)),
        }
    }
}

impl Scanner<'_> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    #[inline]
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    #[cold]
    fn err(&self, what: &'static str) -> Fail {
        self.err_at(what, self.i)
    }

    #[cold]
    #[inline(never)]
    fn err_at(&self, what: &'static str, at: usize) -> Fail {
        self.error.set((what, at));
        Fail
    }

    /// After the value: only whitespace may follow; else fails with `what`.
    #[inline]
    fn end(&mut self, what: &'static str) -> Result<(), ScanError> {
        self.ws();
        if self.i != self.b.len() {
            self.err(what);
            return Err(self.error());
        }
        Ok(())
    }

    /// The failure recorded, as the scan reports it.
    fn error(&self) -> ScanError {
        let (what, at) = self.error.get();
        ScanError {
            what,
            at,
            not_an_object: None,
        }
    }

    fn expect(&mut self, c: u8, what: &'static str) -> Result<(), Fail> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(what))
        }
    }

    /// One value at nesting `depth`.
    fn value(&mut self, depth: usize) -> Result<(), Fail> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested more than 128 levels deep"));
        }
        match self.peek() {
            Some(b'{') => self.object(depth, |_, _| {}),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(drop),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("expected a value")),
            None => Err(self.err("unexpected end of the line")),
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), Fail> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.err("expected a value"))
        }
    }

    /// An object at nesting `depth`; `field` sees each field's raw (still escaped) name and
    /// the byte range of its value.
    fn object(
        &mut self,
        depth: usize,
        mut field: impl FnMut(&[u8], (usize, usize)),
    ) -> Result<(), Fail> {
        let b = self.b;
        self.i += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            let (name_start, name_end) = self.string()?;
            self.ws();
            self.expect(b':', "expected ':' after a field name")?;
            self.ws();
            let start = self.i;
            self.value(depth + 1)?;
            field(&b[name_start..name_end], (start, self.i));
            self.ws();
            match self.next() {
                Some(b',') => continue,
                Some(b'}') => return Ok(()),
                _ => {
                    let at = self.i.saturating_sub(1);
                    return Err(self.err_at("expected ',' or '}' in an object", at));
                }
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<(), Fail> {
        self.i += 1;
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            self.value(depth + 1)?;
            self.ws();
            match self.next() {
                Some(b',') => continue,
                Some(b']') => return Ok(()),
                _ => return Err(self.err("expected ',' or ']' in an array")),
            }
        }
    }

    /// A string; returns the range of its contents (between the quotes).
    fn string(&mut self) -> Result<(usize, usize), Fail> {
        if self.peek() != Some(b'"') {
            return Err(self.err("expected a string"));
        }
        self.i += 1;
        let start = self.i;
        loop {
            self.i += plain_run(&self.b[self.i..]);
            match self.next() {
                Some(b'"') => return Ok((start, self.i - 1)),
                Some(b'\\') => self.escape()?,
                Some(_) => return Err(self.err_at("control character in a string", self.i - 1)),
                None => return Err(self.err("unterminated string")),
            }
        }
    }

    fn escape(&mut self) -> Result<(), Fail> {
        match self.next() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(()),
            Some(b'u') => {
                let code = self.hex4().ok_or_else(|| self.err("bad \\u escape"))?;
                if (0xDC00..0xE000).contains(&code) {
                    return Err(self.err("lone trailing surrogate in a \\u escape"));
                }
                if (0xD800..0xDC00).contains(&code) {
                    let pair = self.b.get(self.i..self.i + 2) == Some(b"\\u");
                    self.i += 2;
                    let low = pair.then(|| self.hex4()).flatten();
                    if !low.is_some_and(|l| (0xDC00..0xE000).contains(&l)) {
                        return Err(self.err("lone leading surrogate in a \\u escape"));
                    }
                }
                Ok(())
            }
            _ => Err(self.err_at("bad escape", self.i.saturating_sub(1))),
        }
    }

    /// Four hex digits at the cursor, consumed.
    fn hex4(&mut self) -> Option<u32> {
        let h = self.b.get(self.i..self.i + 4)?;
        if !h.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        self.i += 4;
        let digits = std::str::from_utf8(h).ok()?;
        u32::from_str_radix(digits, 16).ok()
    }

    fn number(&mut self) -> Result<(), Fail> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.next() {
            Some(b'0') => {}
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.err("bad number")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(self.err("bad number: no digit after '.'"));
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(self.err("bad number: no digit in the exponent"));
            }
            self.digits();
        }
        Ok(())
    }

    #[inline]
    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Scanned {
        scan_object(text.as_bytes(), b"key", b"value").unwrap()
    }

    #[test]
    fn fields_and_the_end_are_found() {
        let t = r#" {"z":1, "key" : "k:5","a":[1,{"key":2}],"value":null} "#;
        let s = ok(t);
        assert_eq!(&t[s.key.unwrap().0..s.key.unwrap().1], r#""k:5""#);
        assert_eq!(&t[s.into.unwrap().0..s.into.unwrap().1], "null");
        assert_eq!(&t[s.close..], "} ");
        assert!(!s.empty);
        let e = ok("{}");
        assert!(e.empty && e.key.is_none() && e.close == 1);
        let esc = ok(r#"{"k\u0065y":7}"#);
        assert_eq!(esc.key, Some((12, 13)));
    }

    /// The scan accepts and refuses exactly what serde_json does, on a corpus of valid and
    /// invalid lines.
    #[test]
    fn the_scan_agrees_with_serde_json() {
        let corpus = [
            r#"{"a":1.50,"b":1e3,"c":-0,"d":123456789012345678901234567890}"#,
            r#"{"s":"\u00e9\"\\\/\b\f\n\r\t","n":[[],{},[{}]],"t":true,"f":false,"z":null}"#,
            r#"{"emoji":"\ud83d\ude00","raw":"é"}"#,
            r#"{"lone":"\ud83d"}"#,
            r#"{"lone":"\ude00"}"#,
            r#"{"lone":"\ud83dx"}"#,
            "{ }",
            "  {\"a\" :\t[ 1 , 2 ] }  ",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":.5}",
            "{\"a\":1e}",
            "{\"a\":-}",
            "{\"a\":+1}",
            "{\"a\":tru}",
            "{\"a\":\"x\ty\"}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\u12\"}",
            "{\"a\":1,}",
            "{,}",
            "{\"a\" 1}",
            "{\"a\":1}}",
            "{\"a\":1} x",
            "{\"a\":[1,]}",
            "{\"a\":[1 2]}",
            "{'a':1}",
            "{\"a\":\"unterminated}",
            "[1,2]",
            "\"just a string\"",
            "42",
            "",
            "{",
        ];
        for line in corpus {
            let serde = serde_json::from_str::<serde_json::Value>(line);
            let ours = scan_object(line.as_bytes(), b"a", b"b");
            let serde_object = matches!(serde, Ok(serde_json::Value::Object(_)));
            assert_eq!(
                ours.is_ok(),
                serde_object,
                "{line:?}: ours {ours:?}, serde {serde:?}"
            );
            if let (Ok(v), Err(e)) = (&serde, &ours) {
                assert!(e.not_an_object.is_some(), "{line:?}: valid {v:?} but {e:?}");
            }
        }
    }

    /// The word-at-a-time skip stops where the byte-at-a-time one does, whatever the byte
    /// and wherever it falls in a word.
    #[test]
    fn plain_runs_stop_at_the_first_special_byte() {
        let slow = |b: &[u8]| {
            b.iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .unwrap_or(b.len())
        };
        for stop in 0..=255u8 {
            for at in 0..20 {
                let mut b: Vec<u8> = (0..24).map(|i| b'a' + (i % 26) as u8).collect();
                b.extend_from_slice("é€😀".as_bytes());
                b[at] = stop;
                b[at + 1] = 0x7f;
                assert_eq!(plain_run(&b), slow(&b), "byte {stop:#x} at {at}");
            }
        }
        assert_eq!(plain_run(b""), 0);
        assert_eq!(plain_run("ééééé".as_bytes()), 10);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert!(scan_object(deep.as_bytes(), b"a", b"b").is_err());
        let fine = format!("{{\"a\":{}{}}}", "[".repeat(100), "]".repeat(100));
        assert!(scan_object(fine.as_bytes(), b"a", b"b").is_ok());
    }

    #[test]
    fn escapes_unescape() {
        assert_eq!(
            unescape(br#"a\u00e9\n\ud83d\ude00"#).unwrap(),
            "aé\n😀".as_bytes()
        );
        assert!(unescape(br#"\ud83d"#).is_none(), "a lone high surrogate");
    }
}
