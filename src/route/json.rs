//! The JSON source of the user id: [`JsonScanner`] reads the top-level keys of a body in
//! one validating pass that builds nothing.
//!
//! # Hot path
//! The scanner reads the body where it lies (a de-chunked body is assembled once in the
//! scanner's own buffer), moves through strings sixteen bytes at a time (SSE2 on x86_64),
//! compares top-level keys in place behind a filter built with the configuration
//! ([`crate::config::JsonKeys`]: per key length, a 64-bit mask from the first and last
//! byte), and keeps its few buffers (an unescaped key, the nesting stack beyond 64 levels)
//! between requests, so a warm scan allocates nothing. It takes 0.4–0.5× the time of the
//! `simd-json` tape it replaced, on a 200-byte order and on a 2-KiB batch
//! (`benches/extract.rs`).
//!
//! Why no structural index: on bodies this small the cost is a chain of dependent steps
//! (where a string ends decides where the next token starts), not bytes. `simd-json`'s
//! stage 1 alone (its AVX2 structural index, not public API) took 0.5–0.65× the time of
//! this whole pass in profiles of the bench bodies, before any value is validated. Blocks
//! pay inside strings only: most of an order's strings end within one 16-byte block, found
//! with one set of compares and a mask (2,310 → 2,052 instructions for the 200-byte order,
//! against the 8-byte SWAR scan before it, which earlier timings could not tell apart). The
//! last bytes of a body are read as its last block, the bytes already passed shifted out of
//! the masks, so no read goes past the body.

use crate::config::ExtractRules;
use crate::error::ProxyError;
use crate::route::extract::{bad, hex, Agreement};

/// Reusable state for scanning JSON bodies for the user id.
///
/// A scan reads the body once, left to right, and validates all of it while it looks at
/// the keys of the top-level object; it builds nothing. Nested values are checked and
/// skipped; a top-level key is compared in place (decoded into `key` only when it holds
/// escapes or bytes beyond ASCII), in any case, as Go's `encoding/json` matches keys to
/// fields; only the values of configured keys are decoded, straight into the caller's
/// output. "Valid" is RFC 8259 as `serde_json` reads it (the `user_id_json` fuzz target
/// compares the two): the grammar, numbers (`-0`, not `01`, `1.`, `.5` or `+1`), the three
/// literals, string escapes (a `\u` high surrogate must be followed by a `\u` low
/// surrogate, a low one never stands alone), UTF-8 inside strings, no raw control
/// character inside a string, no number that rounds beyond the `f64` range (`1e309`, as
/// `simd-json` and `serde_json` refuse it; rounding is exact, as in `simd-json`, where
/// `serde_json`'s fast path refuses the last half-ulp below the limit too), nothing after
/// the value but whitespace, and any nesting depth (`simd-json` stopped at 1,024).
pub struct JsonScanner {
    /// A body the caller assembles itself (de-chunked), through [`Self::input`].
    input: Vec<u8>,
    /// A top-level key with escapes, decoded.
    key: Vec<u8>,
    /// Which open containers of a nested value are objects, one bit per level, for the
    /// levels beyond the first 64 (those live in a register).
    deep: Vec<u64>,
}

impl Default for JsonScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonScanner {
    /// A scanner with an input buffer sized for typical order bodies; it grows once if
    /// needed.
    pub fn new() -> Self {
        Self {
            input: Vec::with_capacity(4096),
            key: Vec::with_capacity(64),
            deep: Vec::new(),
        }
    }

    /// Clear and return the input buffer, for a caller that de-chunks a body into it.
    pub fn input(&mut self) -> &mut Vec<u8> {
        self.input.clear();
        &mut self.input
    }

    /// Scan a contiguous body in place. A body that is not a JSON object names nobody
    /// (`Ok(false)`): no backend reads a user from it either. One that opens an object (or
    /// starts with a byte order mark) but is not one valid JSON document is refused:
    /// lenient readers (Go, Node, Python) still find a user in it.
    pub fn scan(
        &mut self,
        body: &[u8],
        rules: &ExtractRules,
        out: &mut Vec<u8>,
    ) -> Result<bool, ProxyError> {
        scan_body(body, rules, out, &mut self.key, &mut self.deep)
    }

    /// Scan whatever [`Self::input`] was filled with, like [`Self::scan`].
    pub fn scan_input(
        &mut self,
        rules: &ExtractRules,
        out: &mut Vec<u8>,
    ) -> Result<bool, ProxyError> {
        scan_body(&self.input, rules, out, &mut self.key, &mut self.deep)
    }
}

/// The whole scan: the top-level object's configured keys, every byte validated.
///
/// A refusal (conflict, wrong type, too long) found on the way is held until the end:
/// an invalid document is refused as such even when a refusable id came before the fault.
fn scan_body(
    body: &[u8],
    rules: &ExtractRules,
    out: &mut Vec<u8>,
    key: &mut Vec<u8>,
    deep: &mut Vec<u64>,
) -> Result<bool, ProxyError> {
    let mut agree = Agreement::new(out, rules.max_user_id_bytes, "conflicting user ids in body");
    let mut scan = Scan {
        buf: body,
        pos: 0,
        refusal: None,
    };
    scan.skip_ws();
    if scan.peek() != b'{' {
        // Python and Express skip a byte order mark and read the object behind it.
        if body.starts_with(b"\xEF\xBB\xBF") {
            return Err(bad("invalid JSON body"));
        }
        return Ok(false);
    }
    match scan.top_level_object(rules, &mut agree, key, deep) {
        Ok(()) => match scan.refusal {
            Some(e) => Err(e),
            None => Ok(agree.found),
        },
        Err(Invalid) => {
            agree.out.clear();
            Err(bad("invalid JSON body"))
        }
    }
}

/// The body is not a JSON document.
struct Invalid;

/// What [`Scan::string`] met in a string: escapes, and bytes beyond ASCII.
const ESCAPED: u8 = 1;
const NON_ASCII: u8 = 2;

type Step<T = ()> = Result<T, Invalid>;

/// A position in the body. Reading past the end yields `0`, a byte that is invalid
/// wherever the scanner looks at one, so the end needs no test of its own.
struct Scan<'a> {
    buf: &'a [u8],
    pos: usize,
    /// The first refusal met, answered once the whole body proved valid.
    refusal: Option<ProxyError>,
}

impl<'a> Scan<'a> {
    #[inline(always)]
    fn peek(&self) -> u8 {
        self.buf.get(self.pos).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn skip_ws(&mut self) {
        // Most tokens follow each other without whitespace: one compare for those.
        if self.peek() > b' ' {
            return;
        }
        while matches!(self.peek(), b' ' | b'\t' | b'\n' | b'\r') {
            self.pos += 1;
        }
    }

    #[inline(always)]
    fn expect(&mut self, b: u8) -> Step {
        if self.peek() != b {
            return Err(Invalid);
        }
        self.pos += 1;
        Ok(())
    }

    fn top_level_object(
        &mut self,
        rules: &ExtractRules,
        agree: &mut Agreement<'_>,
        key: &mut Vec<u8>,
        deep: &mut Vec<u64>,
    ) -> Step {
        let longest = rules.json_keys.longest();
        // Keys are mostly sent as configured: an exact match costs no case folding.
        let is_id_key = |k: &[u8]| {
            rules.json_keys.may_match(k)
                && (rules.json_keys.iter().any(|n| **n == *k) || is_id_in_other_case(rules, k))
        };
        self.pos += 1; // `{`
        self.skip_ws();
        if self.peek() == b'}' {
            self.pos += 1;
        } else {
            loop {
                self.expect(b'"')?;
                let start = self.pos;
                let kinds = self.string()?;
                let raw = &self.buf[start..self.pos - 1];
                let is_id = if kinds == 0 {
                    is_id_key(raw)
                } else {
                    decoded_key_is_id(raw, kinds, longest, key, is_id_key)
                };
                self.skip_ws();
                self.expect(b':')?;
                self.skip_ws();
                if is_id && self.refusal.is_none() {
                    self.id_value(agree, deep)?;
                } else {
                    match self.peek() {
                        b'"' => {
                            self.pos += 1;
                            self.string()?;
                        }
                        b'-' | b'0'..=b'9' => {
                            self.number()?;
                        }
                        // Flags are common in orders: no call for them.
                        b't' => self.literal(b"true")?,
                        b'f' => self.literal(b"false")?,
                        b'n' => self.literal(b"null")?,
                        _ => self.skip_value(deep)?,
                    }
                }
                self.skip_ws();
                match self.peek() {
                    b',' => {
                        self.pos += 1;
                        self.skip_ws();
                    }
                    b'}' => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(Invalid),
                }
            }
        }
        self.skip_ws();
        if self.pos != self.buf.len() {
            return Err(Invalid);
        }
        Ok(())
    }

    /// The value of a configured key: offered as an id, or noted as refused.
    fn id_value(&mut self, agree: &mut Agreement<'_>, deep: &mut Vec<u64>) -> Step {
        let start = self.pos;
        let offered = match self.peek() {
            b'"' => {
                self.pos += 1;
                let is_escaped = self.string()? & ESCAPED != 0;
                let raw = &self.buf[start + 1..self.pos - 1];
                if !is_escaped && raw.len() > agree.max {
                    // Refused before it is copied anywhere.
                    return self.refuse(bad("user id too long"));
                }
                let max = agree.max;
                agree.offer(|o| {
                    if is_escaped {
                        // Decoded in full, `\u0061`s would grow the id buffer to the
                        // body's size.
                        if !unescape_into(raw, o, max) {
                            return Err(bad("user id too long"));
                        }
                    } else {
                        o.extend_from_slice(raw);
                    }
                    Ok(())
                })
            }
            b'-' | b'0'..=b'9' => {
                let is_integer = self.number()?;
                match integer_id(&self.buf[start..self.pos]).filter(|_| is_integer) {
                    Some(text) => agree.offer(|o| {
                        o.extend_from_slice(text);
                        Ok(())
                    }),
                    None => Err(bad("user id must be a string or an integer")),
                }
            }
            b'n' => {
                self.literal(b"null")?;
                Ok(())
            }
            _ => {
                self.skip_value(deep)?;
                Err(bad("user id must be a string or an integer"))
            }
        };
        match offered {
            Ok(()) => Ok(()),
            Err(e) => self.refuse(e),
        }
    }

    fn refuse(&mut self, e: ProxyError) -> Step {
        self.refusal = Some(e);
        Ok(())
    }

    /// Skip one value of any type and depth, validating it; `pos` is at its first byte.
    fn skip_value(&mut self, deep: &mut Vec<u64>) -> Step {
        let mut open = Nesting {
            depth: 0,
            near: 0,
            deep,
        };
        loop {
            // A value starts here.
            match self.peek() {
                b'"' => {
                    self.pos += 1;
                    self.string()?;
                }
                b'-' | b'0'..=b'9' => {
                    self.number()?;
                }
                b'{' => {
                    self.pos += 1;
                    self.skip_ws();
                    if self.peek() == b'}' {
                        self.pos += 1;
                    } else {
                        open.push(true);
                        self.member_name()?;
                        continue;
                    }
                }
                b'[' => {
                    self.pos += 1;
                    self.skip_ws();
                    if self.peek() == b']' {
                        self.pos += 1;
                    } else {
                        open.push(false);
                        continue;
                    }
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                _ => return Err(Invalid),
            }
            // A value ended: close containers until one goes on with a next element.
            loop {
                let Some(is_object) = open.top() else {
                    return Ok(());
                };
                self.skip_ws();
                match self.peek() {
                    b',' => {
                        self.pos += 1;
                        self.skip_ws();
                        if is_object {
                            self.member_name()?;
                        }
                        break;
                    }
                    b'}' if is_object => {
                        self.pos += 1;
                        open.depth -= 1;
                    }
                    b']' if !is_object => {
                        self.pos += 1;
                        open.depth -= 1;
                    }
                    _ => return Err(Invalid),
                }
            }
        }
    }

    /// `"name"` `:` and the whitespace around, up to a nested member's value.
    #[inline(always)]
    fn member_name(&mut self) -> Step {
        self.expect(b'"')?;
        self.string()?;
        self.skip_ws();
        self.expect(b':')?;
        self.skip_ws();
        Ok(())
    }

    #[inline(always)]
    fn literal(&mut self, word: &'static [u8]) -> Step {
        if self.buf.get(self.pos..self.pos + word.len()) != Some(word) {
            return Err(Invalid);
        }
        self.pos += word.len();
        Ok(())
    }

    /// A string's contents and closing quote (`pos` is just past the opening quote).
    /// Returns whether it holds escapes ([`ESCAPED`]) and bytes beyond ASCII
    /// ([`NON_ASCII`]).
    #[inline(always)]
    fn string(&mut self) -> Step<u8> {
        let mut kinds = 0;
        loop {
            // Sixteen bytes at a time while none needs a closer look. Fewer than sixteen
            // left: the body's last sixteen, the bytes before `pos` shifted out of the
            // masks (a body shorter than that is read byte by byte).
            loop {
                let len = self.buf.len();
                let (special, quote, step) =
                    if let Some(block) = self.buf[self.pos..].first_chunk::<16>() {
                        let (special, quote) = string_masks(block);
                        (special, quote, 16)
                    } else if let Some(block) = self.buf.last_chunk::<16>() {
                        let skip = self.pos + 16 - len;
                        let (special, quote) = string_masks(block);
                        (special >> skip, quote >> skip, 16 - skip)
                    } else {
                        let (special, quote) = string_masks_bytewise(&self.buf[self.pos..]);
                        (special, quote, len - self.pos)
                    };
                if special != 0 {
                    let at = special.trailing_zeros();
                    self.pos += at as usize;
                    if quote >> at & 1 != 0 {
                        // The usual end: plain bytes, then the closing quote.
                        self.pos += 1;
                        return Ok(kinds);
                    }
                    break;
                }
                self.pos += step;
                if step < 16 {
                    // The end of the body, inside the string.
                    break;
                }
            }
            match self.peek() {
                b'"' => {
                    self.pos += 1;
                    return Ok(kinds);
                }
                b'\\' => {
                    self.escape()?;
                    kinds |= ESCAPED;
                }
                // A raw control character, or the end of the body.
                0x00..=0x1f => return Err(Invalid),
                0x80..=0xff => {
                    self.pos += utf8_len(&self.buf[self.pos..]).ok_or(Invalid)?;
                    kinds |= NON_ASCII;
                }
                _ => self.pos += 1,
            }
        }
    }

    /// One escape sequence (`pos` is at its `\`).
    fn escape(&mut self) -> Step {
        match self.buf.get(self.pos + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.pos += 2,
            Some(b'u') => {
                let unit = hex4(self.buf.get(self.pos + 2..self.pos + 6))?;
                self.pos += 6;
                match unit {
                    0xD800..=0xDBFF => {
                        // A high surrogate must be followed by an escaped low surrogate.
                        if self.buf.get(self.pos..self.pos + 2) != Some(b"\\u")
                            || !matches!(
                                hex4(self.buf.get(self.pos + 2..self.pos + 6))?,
                                0xDC00..=0xDFFF
                            )
                        {
                            return Err(Invalid);
                        }
                        self.pos += 6;
                    }
                    0xDC00..=0xDFFF => return Err(Invalid),
                    _ => {}
                }
            }
            _ => return Err(Invalid),
        }
        Ok(())
    }

    /// A number (`pos` at its first byte). Returns whether it is an integer (no
    /// fraction, no exponent).
    #[inline(always)]
    fn number(&mut self) -> Step<bool> {
        let start = self.pos;
        if self.peek() == b'-' {
            self.pos += 1;
        }
        let int_start = self.pos;
        match self.peek() {
            b'0' => self.pos += 1,
            b'1'..=b'9' => self.digits(),
            _ => return Err(Invalid),
        }
        // Decimal digits before the point once the exponent is applied: a bound on the
        // magnitude, to leave the exact range check to the rare number that needs it.
        let mut magnitude = self.pos - int_start;
        let mut is_integer = true;
        if self.peek() == b'.' {
            self.pos += 1;
            if !self.peek().is_ascii_digit() {
                return Err(Invalid);
            }
            self.digits();
            is_integer = false;
        }
        if matches!(self.peek(), b'e' | b'E') {
            self.pos += 1;
            let is_negative = self.peek() == b'-';
            if matches!(self.peek(), b'-' | b'+') {
                self.pos += 1;
            }
            let exp_start = self.pos;
            if !self.peek().is_ascii_digit() {
                return Err(Invalid);
            }
            self.digits();
            is_integer = false;
            if !is_negative {
                let exponent = self.buf[exp_start..self.pos].iter().fold(0usize, |e, d| {
                    e.saturating_mul(10).saturating_add(usize::from(d - b'0'))
                });
                magnitude = magnitude.saturating_add(exponent);
            }
        }
        if magnitude > 308 && is_beyond_f64(&self.buf[start..self.pos]) {
            return Err(Invalid);
        }
        Ok(is_integer)
    }

    #[inline(always)]
    fn digits(&mut self) {
        while self.peek().is_ascii_digit() {
            self.pos += 1;
        }
    }
}

/// The open containers of a nested value: one bit per level, set for an object.
struct Nesting<'a> {
    depth: usize,
    /// Levels 0..64.
    near: u64,
    /// Levels from 64 on, kept by the scanner so that a warm scan does not allocate.
    deep: &'a mut Vec<u64>,
}

impl Nesting<'_> {
    #[inline(always)]
    fn push(&mut self, is_object: bool) {
        let d = self.depth;
        if d < 64 {
            self.near = (self.near & !(1 << d)) | (u64::from(is_object) << d);
        } else {
            let (word, bit) = ((d - 64) / 64, (d - 64) % 64);
            if word == self.deep.len() {
                self.deep.push(0);
            }
            let w = &mut self.deep[word];
            *w = (*w & !(1 << bit)) | (u64::from(is_object) << bit);
        }
        self.depth = d + 1;
    }

    /// Whether the innermost open container is an object (`None`: none is open).
    #[inline(always)]
    fn top(&self) -> Option<bool> {
        let d = self.depth.checked_sub(1)?;
        Some(if d < 64 {
            self.near >> d & 1 == 1
        } else {
            self.deep[(d - 64) / 64] >> ((d - 64) % 64) & 1 == 1
        })
    }
}

/// Which of 16 bytes a string scan must look at — `"`, `\`, a control character or a byte
/// beyond ASCII — and which of them are quotes (bit k: byte k).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn string_masks(block: &[u8; 16]) -> (u32, u32) {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    // SAFETY: `block` is 16 readable bytes; the load has no alignment need. The SSE2
    // intrinsics are baseline on x86_64.
    unsafe {
        let v = _mm_loadu_si128(block.as_ptr().cast());
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        // Signed bytes: below 0x20 are the control characters and 0x80 and above.
        let control_or_high = _mm_cmplt_epi8(v, _mm_set1_epi8(0x20));
        let special = _mm_or_si128(_mm_or_si128(quote, backslash), control_or_high);
        (
            _mm_movemask_epi8(special) as u32,
            _mm_movemask_epi8(quote) as u32,
        )
    }
}

/// Which of 16 bytes a string scan must look at (see the x86_64 version).
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn string_masks(block: &[u8; 16]) -> (u32, u32) {
    string_masks_bytewise(block)
}

/// [`string_masks`] of the first 16 bytes of `bytes` or fewer, one byte at a time.
#[inline]
fn string_masks_bytewise(bytes: &[u8]) -> (u32, u32) {
    let (mut special, mut quote) = (0, 0);
    for (k, &b) in bytes.iter().take(16).enumerate() {
        special |= u32::from(matches!(b, b'"' | b'\\' | 0x00..=0x1f | 0x80..=0xff)) << k;
        quote |= u32::from(b == b'"') << k;
    }
    (special, quote)
}

/// The length of the well-formed UTF-8 sequence at the start of `s` (whose first byte
/// is not ASCII), or `None` (Unicode Table 3-7: no overlong forms, no surrogates,
/// nothing beyond U+10FFFF).
fn utf8_len(s: &[u8]) -> Option<usize> {
    let at = |i: usize| s.get(i).copied().unwrap_or(0);
    let is_cont = |b: u8| b & 0xC0 == 0x80;
    let (second_ok, len) = match at(0) {
        0xC2..=0xDF => (is_cont(at(1)), 2),
        0xE0 => ((0xA0..=0xBF).contains(&at(1)), 3),
        0xE1..=0xEC | 0xEE..=0xEF => (is_cont(at(1)), 3),
        0xED => ((0x80..=0x9F).contains(&at(1)), 3),
        0xF0 => ((0x90..=0xBF).contains(&at(1)), 4),
        0xF1..=0xF3 => (is_cont(at(1)), 4),
        0xF4 => ((0x80..=0x8F).contains(&at(1)), 4),
        _ => return None,
    };
    (second_ok && (2..len).all(|i| is_cont(at(i)))).then_some(len)
}

fn hex4(digits: Option<&[u8]>) -> Step<u32> {
    digits
        .ok_or(Invalid)?
        .iter()
        .try_fold(0u32, |v, &d| Some(v << 4 | u32::from(hex(d)?)))
        .ok_or(Invalid)
}

/// Whether the top-level key `raw`, with escapes or bytes beyond ASCII (`kinds`), reads as
/// a configured key, `longest` being the longest configured key (all ASCII). It is
/// decoded, then `ſ` and `K` (Kelvin) are folded to `s` and `k`, the only characters
/// beyond ASCII that Go's `encoding/json` matches to ASCII letters (Unicode simple case
/// folding). A key reads as at least a sixth of its raw length (a `\u` escape with its
/// four hex digits, six raw bytes, is the longest spelling of one byte), so a longer raw
/// key is not decoded at all.
#[cold]
#[inline(never)]
fn decoded_key_is_id(
    raw: &[u8],
    kinds: u8,
    longest: usize,
    key: &mut Vec<u8>,
    is_id_key: impl Fn(&[u8]) -> bool,
) -> bool {
    if raw.len() > 6 * longest {
        return false;
    }
    key.clear();
    if kinds & ESCAPED != 0 {
        // Never longer decoded than raw.
        unescape_into(raw, key, raw.len());
    } else {
        key.extend_from_slice(raw);
    }
    if !key.is_ascii() {
        fold_to_ascii(key);
    }
    is_id_key(key)
}

/// Whether `key` is a configured key in another case.
#[cold]
#[inline(never)]
fn is_id_in_other_case(rules: &ExtractRules, key: &[u8]) -> bool {
    rules.json_keys.iter().any(|n| n.eq_ignore_ascii_case(key))
}

/// Replace `ſ` (U+017F) with `s` and `K` (U+212A) with `k` in valid UTF-8.
fn fold_to_ascii(key: &mut Vec<u8>) {
    let (mut from, mut to) = (0, 0);
    while from < key.len() {
        let (b, used) = match key[from..] {
            [0xC5, 0xBF, ..] => (b's', 2),
            [0xE2, 0x84, 0xAA, ..] => (b'k', 3),
            [b, ..] => (b, 1),
            [] => break,
        };
        key[to] = b;
        to += 1;
        from += used;
    }
    key.truncate(to);
}

/// Append the decoded contents of a string the scanner has validated (no quotes), if
/// they are at most `max` bytes; otherwise `false`, having appended at most `max`.
fn unescape_into(raw: &[u8], out: &mut Vec<u8>, max: usize) -> bool {
    let end = out.len() + max;
    let mut rest = raw;
    while let Some(i) = memchr::memchr(b'\\', rest) {
        if out.len() + i > end {
            return false;
        }
        out.extend_from_slice(&rest[..i]);
        let escape = &rest[i + 1..];
        let unit = |at: usize| hex4(escape.get(at..at + 4)).unwrap_or(0xFFFD);
        let (c, used) = match escape.first().copied().unwrap_or(b'\\') {
            b'u' => match unit(1) {
                hi @ 0xD800..=0xDBFF => {
                    let lo = unit(7).wrapping_sub(0xDC00);
                    (0x10000 + ((hi - 0xD800) << 10) + lo, 11)
                }
                c => (c, 5),
            },
            b'b' => (0x08, 1),
            b'f' => (0x0C, 1),
            b'n' => (0x0A, 1),
            b'r' => (0x0D, 1),
            b't' => (0x09, 1),
            b => (u32::from(b), 1),
        };
        let c = char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER);
        if out.len() + c.len_utf8() > end {
            return false;
        }
        out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        rest = escape.get(used..).unwrap_or_default();
    }
    if out.len() + rest.len() > end {
        return false;
    }
    out.extend_from_slice(rest);
    true
}

/// The text an integer names its user by: itself (JSON integers are already canonical),
/// `-0` read as `0`; `None` beyond ±(2^53 − 1), where readers that hold numbers as `f64`
/// (JavaScript, Go into `any`) read another integer (RFC 8259 §6).
fn integer_id(text: &[u8]) -> Option<&[u8]> {
    const LIMIT: &[u8] = b"9007199254740991";
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    if digits == b"0" {
        return Some(digits);
    }
    // Same length: digit strings without leading zeros compare like their values.
    let fits = digits.len() < LIMIT.len() || (digits.len() == LIMIT.len() && digits <= LIMIT);
    fits.then_some(text)
}

/// Whether a number the grammar accepted rounds to infinity as an `f64` (`1e309`): both
/// `simd-json` and `serde_json` refuse the whole document then.
#[cold]
fn is_beyond_f64(text: &[u8]) -> bool {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse::<f64>().ok())
        .is_none_or(f64::is_infinite)
}

#[cfg(test)]
mod differential;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::JsonKeys;

    fn body_id(json: &str) -> Result<Option<String>, ProxyError> {
        let mut s = JsonScanner::new();
        let mut out = Vec::new();
        let found = s.scan(json.as_bytes(), &ExtractRules::default(), &mut out)?;
        Ok(found.then(|| String::from_utf8(out).unwrap()))
    }

    /// The masks of a block are those of its bytes one at a time (the fallback of other
    /// targets), for every byte value at every position, beside other special bytes.
    #[test]
    fn string_masks_of_a_block_are_its_bytes_masks() {
        for fill in [b'a', b'"', b'\\', 0x00, 0x1f, 0x20, 0x7f, 0x80, 0xff] {
            for at in 0..16 {
                for b in 0..=255u8 {
                    let mut block = [fill; 16];
                    block[at] = b;
                    let (special, quote) = string_masks_bytewise(&block);
                    assert_eq!(string_masks(&block), (special, quote), "{block:?}");
                    let is_special = matches!(b, b'"' | b'\\' | ..0x20 | 0x80..);
                    assert_eq!(special >> at & 1 == 1, is_special, "{block:?}");
                    assert_eq!(quote >> at & 1 == 1, b == b'"', "{block:?}");
                }
            }
        }
        // Fewer than sixteen bytes: only those.
        assert_eq!(string_masks_bytewise(b"a\"\x01"), (0b110, 0b010));
        assert_eq!(string_masks_bytewise(b""), (0, 0));
    }

    #[test]
    fn json_corpus() {
        let cases: &[(&str, Option<&str>)] = &[
            (r#"{"user_id":"alice","symbol":"BTCUSDT"}"#, Some("alice")),
            (r#"{"userId":"a"}"#, Some("a")),
            (r#"{"trader_id":"t"}"#, Some("t")),
            (r#"{"traderId":"t"}"#, Some("t")),
            (r#"{"uid":42}"#, Some("42")),
            (r#"{"accountId":-7}"#, Some("-7")),
            (
                r#"{"account_id":9007199254740991}"#,
                Some("9007199254740991"),
            ),
            (r#"  {"x":1, "user_id" : "spaced"}  "#, Some("spaced")),
            (r#"{"user\u005fid":"escaped-key"}"#, Some("escaped-key")),
            (r#"{"user_id":"caf\u00e9"}"#, Some("café")),
            (r#"{"order":{"user_id":"nested"}}"#, None),
            (r#"{"note":"\"user_id\":\"in-string\""}"#, None),
            (
                r#"{"list":[{"user_id":"in-array"}],"x":{"uid":"deep"}}"#,
                None,
            ),
            (
                r#"{"order":{"user_id":"nested"},"user_id":"top"}"#,
                Some("top"),
            ),
            (r#"[{"user_id":"array-root"}]"#, None),
            (r#""user_id""#, None),
            (r#"{"user_id":null}"#, None),
            (r#"{"user_id":""}"#, None),
            (
                r#"{"user_id":"alice","n":18446744073709551616}"#,
                Some("alice"),
            ),
            (r#"{"user_id":"a","user_id":"a"}"#, Some("a")),
            (r#"{"user_id":"7","uid":7}"#, Some("7")),
            (r#"{"USER_ID":"upper"}"#, Some("upper")),
            ("", None),
            ("not json", None),
        ];
        for (json, want) in cases {
            assert_eq!(body_id(json).unwrap().as_deref(), *want, "{json}");
        }
        assert!(is_refused_as_invalid(br#"{"user_id": "alice""#));
    }

    /// Whether the scanner refuses `body` as an object that is not valid JSON.
    fn is_refused_as_invalid(body: &[u8]) -> bool {
        let mut out = Vec::new();
        let scanned = JsonScanner::new().scan(body, &ExtractRules::default(), &mut out);
        matches!(scanned, Err(e) if e.reason() == "invalid JSON body") && out.is_empty()
    }

    #[test]
    fn json_conflicts_and_types_are_refused() {
        for json in [
            r#"{"user_id":"alice","user_id":"bob"}"#,
            r#"{"user_id":"alice","uid":"bob"}"#,
            r#"{"userId":1,"accountId":2}"#,
            r#"{"user_id":1.5}"#,
            r#"{"user_id":true}"#,
            r#"{"user_id":{"id":"x"}}"#,
            r#"{"user_id":["x"]}"#,
        ] {
            assert!(body_id(json).is_err(), "{json}");
        }
        let long = format!(r#"{{"user_id":"{}"}}"#, "x".repeat(257));
        assert!(body_id(&long).is_err());
    }

    /// Whether the scanner takes `value` for a valid JSON value: placed before a
    /// configured key, the key counts exactly when the document is valid, and the body is
    /// refused as invalid otherwise.
    fn is_valid_value(value: &[u8]) -> bool {
        let mut body = br#"{"v":"#.to_vec();
        body.extend_from_slice(value);
        body.extend_from_slice(br#","uid":"x"}"#);
        let mut out = Vec::new();
        match JsonScanner::new().scan(&body, &ExtractRules::default(), &mut out) {
            Ok(found) => {
                assert!(found && out == b"x", "{}", String::from_utf8_lossy(&body));
                true
            }
            Err(_) => {
                assert!(
                    is_refused_as_invalid(&body),
                    "{}",
                    String::from_utf8_lossy(&body)
                );
                false
            }
        }
    }

    #[test]
    fn validity_agrees_with_serde_json() {
        // 120 levels: past the scanner's 64 in a register, within serde_json's default
        // recursion limit (128).
        let deep_ok = format!("{}1{}", "[{\"a\":".repeat(60), "}]".repeat(60));
        let deep_bad = format!("{}1{}", "[{\"a\":".repeat(60), "]}".repeat(60));
        let values: &[&[u8]] = &[
            // Numbers.
            b"0",
            b"-0",
            b"-0.0",
            b"1e5",
            b"1E+5",
            b"1e-5",
            b"0e0",
            b"12.5e-3",
            b"01",
            b"-01",
            b"00",
            b"1.",
            b".5",
            b"+1",
            b"-",
            b"--1",
            b"1e",
            b"1e+",
            b"1e-",
            b"1.e5",
            b"0x1",
            b"1.5.3",
            b"NaN",
            b"Infinity",
            b"-Infinity",
            b"1e308",
            b"1.7976931348623157e308",
            b"1e309",
            b"-1e309",
            b"1e400",
            b"0e99999999999999999999",
            b"1e-99999999999999999999",
            b"1e99999999999999999999",
            b"0.0000000000001e320",
            b"18446744073709551616",
            b"-9223372036854775809",
            // Literals.
            b"true",
            b"false",
            b"null",
            b"tru",
            b"True",
            b"nul",
            b"nulll",
            b"falsey",
            // Strings: escapes, surrogates, control characters, UTF-8.
            br#""""#,
            br#""\"\\\/\b\f\n\r\t""#,
            br#""\u0000\u001f\uFFFF\uabcd""#,
            br#""\ud83d\ude00""#,
            br#""\ud800""#,
            br#""\udc00""#,
            br#""\ud800\u0041""#,
            br#""\ud800\ud800""#,
            br#""\ud800x""#,
            br#""\ude00\ud83d""#,
            br#""\u12""#,
            br#""\u12g4""#,
            br#""\x""#,
            br#""\'""#,
            br#""\""#,
            b"\"tab\there\"",
            b"\"nul\x00\"",
            b"\"del\x7f\"",
            "\"caf\u{e9} \u{20ac} \u{1f600}\"".as_bytes(),
            b"\"\xc3\"",
            b"\"\xc0\xaf\"",
            b"\"\xe0\x80\xaf\"",
            b"\"\xed\xa0\x80\"",
            b"\"\xf4\x90\x80\x80\"",
            b"\"\xf0\x9f\x98\"",
            b"\"\x80\"",
            b"\"\xff\"",
            b"\"unterminated",
            // Containers.
            b"[]",
            b"{}",
            b"[1,2]",
            b"[1,]",
            b"[,1]",
            b"[1 2]",
            br#"{"a":1,}"#,
            br#"{"a" 1}"#,
            br#"{"a":}"#,
            br#"{1:2}"#,
            br#"{"a":1 "b":2}"#,
            br#"["a":1]"#,
            b"[}",
            b"{]",
            b"[[]",
            b"[]]",
            b" [ 1 , { \"a\" : [ ] } ] ",
            deep_ok.as_bytes(),
            deep_bad.as_bytes(),
            // Whitespace: only space, tab, LF and CR.
            b"\x0c1",
            b"1\x0b",
        ];
        for value in values {
            let serde = serde_json::from_slice::<serde_json::Value>(value).is_ok();
            assert_eq!(
                is_valid_value(value),
                serde,
                "{}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn json_numbers_as_ids() {
        for (json, want) in [
            (r#"{"uid":-0}"#, "0"),
            (r#"{"uid":0}"#, "0"),
            (r#"{"uid":-9007199254740991}"#, "-9007199254740991"),
            (r#"{"uid":9007199254740991}"#, "9007199254740991"),
        ] {
            assert_eq!(body_id(json).unwrap().as_deref(), Some(want), "{json}");
        }
        // Beyond i64/u64 an integer is a float to simd-json and serde_json, beyond
        // ±(2^53 − 1) another integer to JavaScript: refused.
        for json in [
            r#"{"uid":-9223372036854775808}"#,
            r#"{"uid":18446744073709551615}"#,
            r#"{"uid":18446744073709551616}"#,
            r#"{"uid":-9223372036854775809}"#,
            r#"{"uid":100000000000000000000}"#,
            r#"{"uid":1e5}"#,
            r#"{"uid":1E5}"#,
            r#"{"uid":-0.0}"#,
            r#"{"uid":1.0}"#,
        ] {
            assert!(body_id(json).is_err(), "{json}");
        }
        // Out of the f64 range, or not a number at all: the document is invalid.
        for json in [
            r#"{"uid":1e309}"#,
            r#"{"uid":01}"#,
            r#"{"uid":-}"#,
            r#"{"uid":1.}"#,
        ] {
            assert!(is_refused_as_invalid(json.as_bytes()), "{json}");
        }
        let huge = format!(r#"{{"uid":"a","n":1{}}}"#, "0".repeat(400));
        assert!(is_refused_as_invalid(huge.as_bytes()));
        let long_but_finite = format!(r#"{{"uid":"a","n":1{}e-200}}"#, "0".repeat(400));
        assert_eq!(body_id(&long_but_finite).unwrap().as_deref(), Some("a"));
    }

    #[test]
    fn json_strings_and_keys() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (br#"{"uid":"\ud83d\ude00"}"#, Some("\u{1f600}")),
            (br#"{"uid":"a\"b\\c\/d"}"#, Some("a\"b\\c/d")),
            (br#"{"uid":"\u0061\u00e9\u20ac"}"#, Some("a\u{e9}\u{20ac}")),
            (
                br#"{"\u0075\u0069\u0064":"all-escaped"}"#,
                Some("all-escaped"),
            ),
            (br#"{"\u0075id\"":"not-uid"}"#, None),
            (br#"{"uid\u0000":"nul-suffix"}"#, None),
            (br#"{"":"empty-key","u":"short"}"#, None),
            ("{\"uid\":\"caf\u{e9}\"}".as_bytes(), Some("caf\u{e9}")),
        ];
        for (json, want) in cases {
            let mut s = JsonScanner::new();
            let mut out = Vec::new();
            let found = s.scan(json, &ExtractRules::default(), &mut out).unwrap();
            let got = found.then(|| String::from_utf8(out).unwrap());
            assert_eq!(got.as_deref(), *want, "{}", String::from_utf8_lossy(json));
        }
        // Faults anywhere invalidate the whole document.
        let invalid: &[&[u8]] = &[
            br#"{"uid":"\ud800"}"#,
            br#"{"uid":"a","x":"\udc00"}"#,
            br#"{"uid":"a","x":{"y":"\ud800\u0041"}}"#,
            br#"{"uid":"a","\ud800":1}"#,
            b"{\"uid\":\"\xff\"}",
            b"{\"uid\":\"a\",\"x\":[\"\xed\xa0\x80\"]}",
            b"{\"uid\":\"a\",\"x\xc0\xaf\":1}",
            b"{\"uid\":\"a\tb\"}",
            b"{\"uid\":\"a\",\"x\":\"\x1f\"}",
        ];
        for json in invalid {
            assert!(
                is_refused_as_invalid(json),
                "{}",
                String::from_utf8_lossy(json)
            );
        }
    }

    #[test]
    fn json_structure() {
        let deep = |n: usize, inner: &str| {
            let mut v = String::new();
            for i in 0..n {
                v.push_str(if i % 3 == 0 { "{\"k\":" } else { "[" });
            }
            v.push_str(inner);
            for i in (0..n).rev() {
                v.push(if i % 3 == 0 { '}' } else { ']' });
            }
            v
        };
        // Any depth (simd-json stopped at 1,024; serde_json without its recursion limit
        // has none), objects and arrays told apart at every level, 64 and beyond too.
        for n in [1, 63, 64, 65, 127, 128, 129, 1_023, 1_024, 1_025, 100_000] {
            let ok = format!(r#"{{"x":{},"user_id":"after-deep"}}"#, deep(n, "1"));
            assert_eq!(body_id(&ok).unwrap().as_deref(), Some("after-deep"), "{n}");
            let uid_inside = format!(r#"{{"x":{}}}"#, deep(n, r#"{"uid":"inner"}"#));
            assert_eq!(body_id(&uid_inside).unwrap(), None, "{n}");
            // The innermost closer swapped for the wrong kind.
            let mut bad = ok.clone().into_bytes();
            let at = ok.find('1').unwrap() + 1;
            bad[at] = if bad[at] == b']' { b'}' } else { b']' };
            assert!(is_refused_as_invalid(&bad), "{n}");
            let unclosed = format!(r#"{{"x":{}1,"uid":"u"}}"#, "[".repeat(n));
            assert!(is_refused_as_invalid(unclosed.as_bytes()), "{n}");
        }
        let cases: &[(&str, Option<&str>)] = &[
            (
                " \t\r\n{ \n\"x\" :\t[ 1 ,{ } , [ ] ]\r, \"uid\" \t:\r 42 \n} \n\r\t",
                Some("42"),
            ),
            // Not whitespace to JSON: the body does not open an object.
            ("\x0c{\"uid\":\"ff\"}", None),
            ("{}", None),
            ("{ }", None),
            ("{\"uid\":null,\"user_id\":\"late\"}", Some("late")),
            ("{\"uid\":\"\",\"user_id\":\"late\"}", Some("late")),
            (
                "{\"uid\":\"same\",\"x\":[{\"uid\":\"other\"}],\"uid\":\"same\"}",
                Some("same"),
            ),
        ];
        for (json, want) in cases {
            assert_eq!(body_id(json).unwrap().as_deref(), *want, "{json:?}");
        }
        for json in [
            "{\"uid\":\"ff\"}\x0c",
            "{\"uid\":\"x\"} {}",
            "{\"uid\":\"x\"}}",
            "{\"uid\":\"x\"},",
            "{\"uid\":\"x\"}\0",
            "\u{feff}{\"uid\":\"bom\"}",
            "{\"uid\":\"x\",}",
            "{,\"uid\":\"x\"}",
            "{\"uid\" \"x\"}",
            "{\"uid\":\"x\" \"a\":1}",
            "{\"uid\":\"x\",\"a\"}",
            "{\"uid\":\"x\",\"a\":[1,]}",
            "{\"uid\":\"x\",\"a\":{\"b\":1,}}",
            "{\"uid\":\"x\",\"a\":{\"b\"}}",
            "{\"uid\":\"x\",\"a\":{1:2}}",
            "{\"uid\":\"x\",\"a\":tru}",
            "{\"uid\":\"x\",\"a\":nulls}",
        ] {
            assert!(is_refused_as_invalid(json.as_bytes()), "{json:?}");
        }
    }

    #[test]
    fn json_matching_key_after_a_huge_nested_value() {
        let mut big = String::from(r#"{"orders":["#);
        for i in 0..2_000 {
            if i > 0 {
                big.push(',');
            }
            big.push_str(&format!(
                r#"{{"user_id":"nested{i}","px":{i}.5,"tags":["a","\u00e9",null,true],"m":{{"uid":{i}}}}}"#
            ));
        }
        big.push_str(r#"],"note":"user_id \"uid\": not a key","accountId":"top"}"#);
        assert!(big.len() > 100_000);
        assert_eq!(body_id(&big).unwrap().as_deref(), Some("top"));
    }

    #[test]
    fn json_refusals_wait_for_a_valid_document() {
        // An invalid document is refused as such, whatever came before the fault.
        for json in [
            r#"{"user_id":"a","uid":"b","x":}"#,
            r#"{"user_id":true,"x":01}"#,
            r#"{"user_id":[1],"x":"\ud800"}"#,
            r#"{"user_id":1.5,"x":1e999}"#,
            r#"{"user_id":"a","uid":"b""#,
        ] {
            assert!(is_refused_as_invalid(json.as_bytes()), "{json}");
        }
        // The first refusal in document order is the one answered.
        let reason = |json: &str| body_id(json).unwrap_err().reason();
        assert_eq!(
            reason(r#"{"uid":"a","user_id":"b","userId":true}"#),
            "conflicting user ids in body"
        );
        assert_eq!(
            reason(r#"{"uid":true,"user_id":"a","userId":"b"}"#),
            "user id must be a string or an integer"
        );
        let long = format!(r#"{{"uid":"a","user_id":"{}"}}"#, "x".repeat(300));
        assert_eq!(reason(&long), "user id too long");
        // A long value is refused without being copied; a long escaped key is not decoded.
        let mut s = JsonScanner::new();
        let mut out = Vec::with_capacity(64);
        let huge = format!(
            r#"{{"{}":1,"uid":"{}"}}"#,
            r"\u0078".repeat(10_000),
            "x".repeat(100_000)
        );
        let refused = s.scan(huge.as_bytes(), &ExtractRules::default(), &mut out);
        assert_eq!(refused.unwrap_err().reason(), "user id too long");
        assert!(out.capacity() < 1_000 && s.key.capacity() < 1_000);
        // Exactly the limit is accepted, escapes counted decoded.
        let at_limit = format!(r#"{{"uid":"{}"}}"#, r"\u00e9".repeat(128));
        assert_eq!(body_id(&at_limit).unwrap().map(|s| s.len()), Some(256));
    }

    #[test]
    fn json_every_prefix_of_a_valid_body_is_refused() {
        let body = "{ \"a\" : [ 1.5e-3 , \"s\\u00e9\\n\" , { \"b\" : null } , true , false ] , \"uid\" : \"caf\u{e9}\" , \"c\" : -0 }";
        assert_eq!(body_id(body).unwrap().as_deref(), Some("caf\u{e9}"));
        assert_eq!(body_id("").unwrap(), None);
        for end in 1..body.len() {
            let prefix = &body.as_bytes()[..end];
            assert!(is_refused_as_invalid(prefix), "{prefix:?}");
        }
    }

    /// An escaped id is decoded only up to `max_user_id_bytes`: decoded in full, a
    /// body of `\u0061`s grew the connection's id buffer to the body's size, for good.
    #[test]
    fn a_long_escaped_id_is_not_decoded_beyond_the_limit() {
        let rules = ExtractRules::default();
        let max = rules.max_user_id_bytes;
        for body in [
            format!(r#"{{"user_id":"{}"}}"#, r"\u0061".repeat(10_000)),
            format!(r#"{{"user_id":"{}"}}"#, r"\n".repeat(10_000)),
            format!(r#"{{"user_id":"a\n{}"}}"#, "b".repeat(10_000)),
            format!(r#"{{"uid":"a","user_id":"{}"}}"#, r"\u00e9".repeat(10_000)),
        ] {
            let mut out = Vec::new();
            let refused = JsonScanner::new().scan(body.as_bytes(), &rules, &mut out);
            assert_eq!(refused.unwrap_err().reason(), "user id too long");
            assert!(out.capacity() <= 2 * max, "{}", out.capacity());
        }
        let exact = format!(r#"{{"user_id":"{}"}}"#, r"\u0061".repeat(max));
        assert_eq!(body_id(&exact).unwrap(), Some("a".repeat(max)));
        let over = format!(r#"{{"user_id":"{}\u00e9"}}"#, "a".repeat(max - 1));
        assert_eq!(body_id(&over).unwrap_err().reason(), "user id too long");
    }

    #[test]
    fn scanner_reuse_across_bodies() {
        let mut s = JsonScanner::new();
        let rules = ExtractRules::default();
        let mut out = Vec::new();
        let big = format!(r#"{{"pad":"{}","user_id":"big"}}"#, "p".repeat(10_000));
        for (body, want) in [(&big[..], "big"), (r#"{"uid":"small"}"#, "small")] {
            assert!(s.scan(body.as_bytes(), &rules, &mut out).unwrap());
            assert_eq!(out, want.as_bytes());
        }
        let input = s.input();
        input.extend_from_slice(br#"{"uid":"dechunked"}"#);
        assert!(s.scan_input(&rules, &mut out).unwrap());
        assert_eq!(out, b"dechunked");
    }

    /// Go's `encoding/json` matches a key to a field case-insensitively (Unicode simple
    /// folding: `ſ` is `s`, `K` (Kelvin) is `k`), and the last match wins:
    /// `{"user_id":"alice","USER_ID":"bob"}` is an order of bob's to a Go backend.
    #[test]
    fn json_keys_match_in_any_case_as_go_reads_them() {
        let reason = |json: &str| body_id(json).map_err(|e| e.reason());
        for json in [
            r#"{"user_id":"alice","USER_ID":"bob"}"#,
            r#"{"user_id":"alice","User_Id":"bob"}"#,
            r#"{"uid":"alice","UID":7}"#,
            r#"{"user_id":"alice","u\u017fer_id":"bob"}"#,
            "{\"user_id\":\"alice\",\"u\u{17f}er_id\":\"bob\"}",
            r#"{"user_id":"alice","\u0055SER_ID":"bob"}"#,
            r#"{"ACCOUNTID":"bob","accountId":"alice"}"#,
        ] {
            assert_eq!(reason(json), Err("conflicting user ids in body"), "{json}");
        }
        let cases: &[(&str, Option<&str>)] = &[
            (r#"{"USER_ID":"upper"}"#, Some("upper")),
            (r#"{"userid":"lower"}"#, Some("lower")),
            ("{\"U\u{17f}ER_ID\":\"long-s\"}", Some("long-s")),
            (r#"{"user_id":"a","USER_ID":"a"}"#, Some("a")),
            // Go folds nothing else to ASCII: dotless and dotted i stay other keys.
            (
                "{\"user_id\":\"alice\",\"user_\u{131}d\":\"bob\"}",
                Some("alice"),
            ),
            (
                "{\"user_id\":\"alice\",\"user_\u{130}d\":\"bob\"}",
                Some("alice"),
            ),
            (r#"{"user-id":"x","user_idx":"y","USER_IDS":"z"}"#, None),
        ];
        for (json, want) in cases {
            assert_eq!(body_id(json).unwrap().as_deref(), *want, "{json}");
        }
        // The Kelvin sign, in a configured key that has a `k`.
        let rules = ExtractRules {
            json_keys: JsonKeys::new(vec![b"ticket".to_vec().into_boxed_slice()]),
            ..ExtractRules::default()
        };
        for json in [
            "{\"ticket\":\"a\",\"TIC\u{212a}ET\":\"b\"}",
            r#"{"ticket":"a","tic\u212aet":"b"}"#,
        ] {
            let refused = JsonScanner::new().scan(json.as_bytes(), &rules, &mut Vec::new());
            assert_eq!(
                refused.unwrap_err().reason(),
                "conflicting user ids in body",
                "{json}"
            );
        }
    }

    /// JavaScript (and Go into `any`) reads JSON numbers as `f64`: beyond 2^53 an integer
    /// becomes its neighbour, `9007199254740993` is user `9007199254740992` to them.
    #[test]
    fn json_integer_ids_beyond_2_pow_53_are_refused() {
        for json in [
            r#"{"uid":9007199254740993}"#,
            r#"{"uid":9007199254740992}"#,
            r#"{"uid":-9007199254740992}"#,
            r#"{"uid":18446744073709551615}"#,
            r#"{"uid":-9223372036854775808}"#,
            r#"{"uid":10000000000000000}"#,
        ] {
            assert_eq!(
                body_id(json).unwrap_err().reason(),
                "user id must be a string or an integer",
                "{json}"
            );
        }
        for (json, want) in [
            (r#"{"uid":9007199254740991}"#, "9007199254740991"),
            (r#"{"uid":-9007199254740991}"#, "-9007199254740991"),
            (r#"{"uid":999999999999999}"#, "999999999999999"),
        ] {
            assert_eq!(body_id(json).unwrap().as_deref(), Some(want), "{json}");
        }
    }

    /// Typical backends read bodies `serde_json` refuses: Go takes invalid UTF-8, lone
    /// surrogates and `1e309` in fields it ignores, and its `Decoder` stops after the
    /// first value; Node and Python take lone surrogates and `1e309`, Python `NaN` and a
    /// leading byte order mark. Each finds alice in these, so an object that is not one
    /// valid document cannot be routed as nobody's.
    #[test]
    fn json_an_object_that_is_not_valid_json_is_refused() {
        let bodies: &[&[u8]] = &[
            br#"{"user_id":"alice","x":"\ud800"}"#,
            br#"{"x":"\udc00","user_id":"alice"}"#,
            b"{\"user_id\":\"alice\",\"x\":\"\xff\"}",
            br#"{"user_id":"alice","x":1e309}"#,
            br#"{"user_id":"alice","x":NaN}"#,
            br#"{"user_id":"alice"} x"#,
            br#"{"user_id":"alice"}{"user_id":"bob"}"#,
            br#"{"user_id":"alice","uid":"bob","x":}"#,
            br#"{"user_id":"alice""#,
            b"\xef\xbb\xbf{\"user_id\":\"alice\"}",
            b" \t{",
        ];
        for body in bodies {
            let refused = JsonScanner::new().scan(body, &ExtractRules::default(), &mut Vec::new());
            assert_eq!(
                refused.map_err(|e| e.reason()),
                Err("invalid JSON body"),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // What is not an object names nobody, valid or not.
        for body in [
            "",
            " ",
            "not json",
            r#"[{"user_id":"x"}]"#,
            "[",
            r#""uid""#,
            "7",
        ] {
            assert_eq!(body_id(body).unwrap(), None, "{body}");
        }
    }
}
