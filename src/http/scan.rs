//! Finding the end of a head: *check, then parse*.
//!
//! [`HeadScanner`] walks the bytes that have arrived, once, looking for the blank line
//! that ends an HTTP/1.1 head. It remembers how far it got, so a head that arrives in
//! many small reads is scanned exactly once in total. On the way it enforces line
//! endings: every LF must follow a CR and every CR must precede an LF (bare CR or bare LF
//! is a request-smuggling vector: other parsers may split lines differently).
//!
//! # Hot path
//! One pass over the head, sixteen bytes at a time (SSE2 on x86_64): a block without CR or
//! LF costs a few instructions, and one with line ends is checked whole with bit masks (a
//! head's lines are ~20 bytes, too short for `memchr2`'s per-call setup to pay). No
//! allocation.

/// Why a head could not be delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanError {
    /// An LF not preceded by CR.
    BareLf,
    /// A CR not followed by LF.
    BareCr,
    /// No end of head within the byte limit.
    TooLarge,
}

/// Incremental search for the `\r\n\r\n` that ends a head.
#[derive(Clone, Copy, Debug, Default)]
pub struct HeadScanner {
    scanned: usize,
}

impl HeadScanner {
    /// A scanner at the start of a head.
    pub const fn new() -> Self {
        Self { scanned: 0 }
    }

    /// Whether nothing has been scanned yet (a new head starts here).
    pub fn is_at_start(&self) -> bool {
        self.scanned == 0
    }

    /// Forget progress (the buffer was compacted or a new head starts).
    pub fn reset(&mut self) {
        self.scanned = 0;
    }

    /// Scan `buf` (the head so far, starting at offset 0). Returns `Ok(Some(len))` with
    /// the head length including the final blank line, `Ok(None)` when more bytes are
    /// needed, or an error. `max_len` bounds the head size.
    pub fn scan(&mut self, buf: &[u8], max_len: usize) -> Result<Option<usize>, ScanError> {
        // Only the first `max_len` bytes can belong to an acceptable head. Looking past
        // them would make the answer depend on how many bytes one read delivered (a bare
        // LF beyond the limit would be reported instead of TooLarge).
        let window = &buf[..buf.len().min(max_len)];
        let mut p = self.scanned.min(window.len());
        // The first two bytes (they have no two bytes before them) and the tail (fewer
        // than 17 left) byte by byte; the rest sixteen at a time.
        let lead = window.len().min(2);
        if p < lead {
            if let Some(r) = self.bytewise(window, p, lead, buf.len(), max_len) {
                return r;
            }
            p = lead;
        }
        if p + 17 <= window.len() {
            // Bit k of each mask is about byte p + k. Carried between blocks: whether the
            // byte before a block is CR, and which of the two before it are LF.
            let mut cr_carry = u32::from(window[p - 1] == b'\r');
            let mut lf_carry =
                u32::from(window[p - 2] == b'\n') | u32::from(window[p - 1] == b'\n') << 1;
            while p + 17 <= window.len() {
                let (cr, lf) = line_end_masks(&window[p..p + 16]);
                if cr | lf != 0 {
                    let lf_after = lf >> 1 | u32::from(window[p + 16] == b'\n') << 15;
                    let bare_lf = lf & !(cr << 1 | cr_carry);
                    let bare_cr = cr & !lf_after;
                    // Every line end before this one was checked, so LF two bytes back
                    // is a CRLF: with the CR just before this LF, the blank line.
                    let end = lf & (lf << 2 | lf_carry);
                    let events = bare_lf | bare_cr | end;
                    if events != 0 {
                        // The first event in byte order decides, as in the bytewise walk.
                        let first = events & events.wrapping_neg();
                        if bare_lf & first != 0 {
                            return Err(ScanError::BareLf);
                        }
                        if bare_cr & first != 0 {
                            return Err(ScanError::BareCr);
                        }
                        self.scanned = 0;
                        return Ok(Some(p + events.trailing_zeros() as usize + 1));
                    }
                }
                cr_carry = cr >> 15;
                lf_carry = lf >> 14;
                p += 16;
            }
        }
        if let Some(r) = self.bytewise(window, p, window.len(), buf.len(), max_len) {
            return r;
        }
        self.scanned = window.len();
        self.check_limit(buf.len(), max_len)
    }

    /// The line-end checks at each CR and LF of `window[from..to]`, in order (lookups may
    /// reach outside the range, within `window`). `Some`: decided.
    fn bytewise(
        &mut self,
        window: &[u8],
        from: usize,
        to: usize,
        len: usize,
        max_len: usize,
    ) -> Option<Result<Option<usize>, ScanError>> {
        for i in from..to {
            match window[i] {
                b'\r' => match window.get(i + 1) {
                    Some(b'\n') => {}
                    Some(_) => return Some(Err(ScanError::BareCr)),
                    None => {
                        // CR is the last byte so far: resume from it next time.
                        self.scanned = i;
                        return Some(self.check_limit(len, max_len));
                    }
                },
                b'\n' => {
                    if i == 0 || window[i - 1] != b'\r' {
                        return Some(Err(ScanError::BareLf));
                    }
                    if i >= 3 && window[i - 2] == b'\n' && window[i - 3] == b'\r' {
                        // i < window.len() <= max_len, so the head fits.
                        self.scanned = 0;
                        return Some(Ok(Some(i + 1)));
                    }
                }
                _ => {}
            }
        }
        None
    }

    fn check_limit(&self, len: usize, max_len: usize) -> Result<Option<usize>, ScanError> {
        if len >= max_len {
            Err(ScanError::TooLarge)
        } else {
            Ok(None)
        }
    }
}

/// Which of 16 bytes are CR and which are LF (bit k: byte k).
#[cfg(target_arch = "x86_64")]
#[inline]
fn line_end_masks(block: &[u8]) -> (u32, u32) {
    use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};
    assert!(block.len() >= 16);
    // SAFETY: `block` has at least 16 readable bytes; the load has no alignment need.
    // The SSE2 intrinsics are baseline on x86_64.
    unsafe {
        let v = _mm_loadu_si128(block.as_ptr().cast());
        let cr = _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'\r' as i8))) as u32;
        let lf = _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'\n' as i8))) as u32;
        (cr, lf)
    }
}

/// Which of 16 bytes are CR and which are LF (bit k: byte k).
#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn line_end_masks(block: &[u8]) -> (u32, u32) {
    let (mut cr, mut lf) = (0, 0);
    for (k, &b) in block[..16].iter().enumerate() {
        cr |= u32::from(b == b'\r') << k;
        lf |= u32::from(b == b'\n') << k;
    }
    (cr, lf)
}

/// Whether the first line of a head the scanner found [`ScanError::TooLarge`] (the
/// request line) ends within `max_len`. If not, its request-target is longer than
/// ringgate parses, which RFC 9112 §3 answers with 414; else the fields are too large
/// (431). The scanner found no bare LF there, so any LF ends a line.
pub fn first_line_ends_within(buf: &[u8], max_len: usize) -> bool {
    memchr::memchr(b'\n', &buf[..buf.len().min(max_len)]).is_some()
}

/// Bytes of empty lines ringgate skips before a request line: RFC 9112 §2.2 lets a server
/// ignore at least one; ringgate ignores four, and a request with more is refused.
pub const MAX_LEADING_CRLF_BYTES: usize = 8;

/// Bytes of leading empty lines (`\r\n`) before a request line, at most `max`.
pub fn leading_crlf_len(buf: &[u8], max: usize) -> usize {
    let mut n = 0;
    while n + 1 < buf.len() && n + 2 <= max && buf[n] == b'\r' && buf[n + 1] == b'\n' {
        n += 2;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_split(input: &[u8], max: usize) -> Vec<Result<Option<usize>, ScanError>> {
        // Feed the input one prefix at a time, the way reads would deliver it.
        let mut out = Vec::new();
        for split in 1..=input.len() {
            let mut s = HeadScanner::new();
            let first = s.scan(&input[..split], max);
            if let Ok(None) = first {
                out.push(s.scan(input, max));
            } else {
                out.push(first);
            }
        }
        out
    }

    #[test]
    fn finds_end_at_every_split() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nNEXT";
        for r in scan_split(head, 1024) {
            // A split before the end yields the same final answer after the rest arrives;
            // a split after it reports the end directly.
            assert_eq!(r, Ok(Some(head.len() - 4)));
        }
    }

    #[test]
    fn byte_by_byte_scans_once() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\n";
        let mut s = HeadScanner::new();
        for end in 1..head.len() {
            assert_eq!(s.scan(&head[..end], 1024), Ok(None), "at {end}");
        }
        assert_eq!(s.scan(head, 1024), Ok(Some(head.len())));
    }

    #[test]
    fn rejects_bare_lf_and_cr() {
        for r in scan_split(b"GET / HTTP/1.1\nHost: a\r\n\r\n", 1024) {
            assert_eq!(r, Err(ScanError::BareLf));
        }
        for r in scan_split(b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 1024)
            .into_iter()
            .skip(24)
        {
            assert_eq!(r, Err(ScanError::BareCr));
        }
        let mut s = HeadScanner::new();
        assert_eq!(
            s.scan(b"GET / HTTP/1.1\r\n\n", 1024),
            Err(ScanError::BareLf)
        );
    }

    #[test]
    fn enforces_limit() {
        let mut s = HeadScanner::new();
        assert_eq!(s.scan(&[b'a'; 100], 100), Err(ScanError::TooLarge));
        let mut s = HeadScanner::new();
        assert_eq!(
            s.scan(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 10),
            Err(ScanError::TooLarge)
        );
    }

    #[test]
    fn answer_past_the_limit_does_not_depend_on_reads() {
        // Regression (fuzz target request_head): a bare LF or CR beyond `max_len` was
        // reported when it arrived in the same read as the bytes before it (400), but
        // TooLarge when a first read already filled the limit (431).
        let mut input = vec![b'a'; 40];
        input.extend_from_slice(b"\nGET\r\r\n\r\n");
        for r in scan_split(&input, 32) {
            assert_eq!(r, Err(ScanError::TooLarge));
        }
        // A CR as the last byte of the window cannot start an acceptable end.
        let mut input = vec![b'a'; 31];
        input.extend_from_slice(b"\r\n\r\n");
        for r in scan_split(&input, 32) {
            assert_eq!(r, Err(ScanError::TooLarge));
        }
        // A head of exactly `max_len` bytes is accepted at every split.
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for r in scan_split(head, head.len()) {
            assert_eq!(r, Ok(Some(head.len())));
        }
    }

    /// The scanner as it was before the block-at-a-time pass (memchr2 over every CR and
    /// LF): the reference the fast one must agree with.
    fn reference(
        scanned: &mut usize,
        buf: &[u8],
        max_len: usize,
    ) -> Result<Option<usize>, ScanError> {
        let limit = |len: usize| {
            if len >= max_len {
                Err(ScanError::TooLarge)
            } else {
                Ok(None)
            }
        };
        let window = &buf[..buf.len().min(max_len)];
        let start = (*scanned).min(window.len());
        for i in memchr::memchr2_iter(b'\r', b'\n', &window[start..]) {
            let i = start + i;
            if window[i] == b'\r' {
                match window.get(i + 1) {
                    Some(b'\n') => continue,
                    Some(_) => return Err(ScanError::BareCr),
                    None => {
                        *scanned = i;
                        return limit(buf.len());
                    }
                }
            }
            if i == 0 || window[i - 1] != b'\r' {
                return Err(ScanError::BareLf);
            }
            if i >= 3 && window[i - 2] == b'\n' && window[i - 3] == b'\r' {
                *scanned = 0;
                return Ok(Some(i + 1));
            }
        }
        *scanned = window.len();
        limit(buf.len())
    }

    #[test]
    fn agrees_with_the_bytewise_reference_on_random_heads() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet = b"aaaaaaaaaaaa:  \r\n\r\n\r\n\rx";
        for _ in 0..200_000 {
            let len = (next() % 90) as usize;
            let mut input: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            // Mostly well-formed lines, so the end is often reached.
            if next() % 2 == 0 {
                for b in input.iter_mut() {
                    if *b == b'\r' || *b == b'\n' {
                        *b = b'a';
                    }
                }
                let mut at = 0;
                while at + 2 <= input.len() {
                    at += (next() % 12) as usize;
                    if at + 2 <= input.len() {
                        input[at] = b'\r';
                        input[at + 1] = b'\n';
                        at += 2;
                    }
                }
            }
            let max_len = 1 + (next() % 100) as usize;
            let split = (next() % (len as u64 + 1)) as usize;
            let (mut fast, mut slow) = (HeadScanner::new(), 0usize);
            let a = fast.scan(&input[..split], max_len);
            let b = reference(&mut slow, &input[..split], max_len);
            assert_eq!(
                a, b,
                "first part of {input:?} split at {split}, max {max_len}"
            );
            if a == Ok(None) {
                let a = fast.scan(&input, max_len);
                let b = reference(&mut slow, &input, max_len);
                assert_eq!(a, b, "{input:?} split at {split}, max {max_len}");
            }
        }
    }

    #[test]
    fn leading_empty_lines() {
        let max = MAX_LEADING_CRLF_BYTES;
        assert_eq!(leading_crlf_len(b"\r\n\r\nGET", max), 4);
        assert_eq!(leading_crlf_len(b"GET", max), 0);
        assert_eq!(leading_crlf_len(b"\r", max), 0);
        assert_eq!(leading_crlf_len(b"\r\n\r\n\r\n\r\n\r\nGET", max), 8);
        assert_eq!(leading_crlf_len(b"\r\n\r\nGET", 2), 2);
    }
}
