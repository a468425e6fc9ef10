//! Finding the end of a head: *check, then parse*.
//!
//! [`HeadScanner`] walks the bytes that have arrived, once, looking for the blank line
//! that ends an HTTP/1.1 head. It remembers how far it got, so a head that arrives in
//! many small reads is scanned exactly once in total. On the way it enforces line
//! endings: every LF must follow a CR and every CR must precede an LF (bare CR or bare LF
//! is a request-smuggling vector: other parsers may split lines differently).
//!
//! # Hot path
//! One `memchr2` pass over the head; no allocation.

use memchr::memchr2_iter;

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
        let start = self.scanned.min(window.len());
        for i in memchr2_iter(b'\r', b'\n', &window[start..]) {
            let i = start + i;
            if window[i] == b'\r' {
                match window.get(i + 1) {
                    Some(b'\n') => continue,
                    Some(_) => return Err(ScanError::BareCr),
                    None => {
                        // CR is the last byte so far: resume from it next time.
                        self.scanned = i;
                        return self.check_limit(buf.len(), max_len);
                    }
                }
            }
            // An LF: must follow a CR (guaranteed i >= 1 when the CR case matched).
            if i == 0 || window[i - 1] != b'\r' {
                return Err(ScanError::BareLf);
            }
            if i >= 3 && window[i - 2] == b'\n' && window[i - 3] == b'\r' {
                // i < window.len() <= max_len, so the head fits.
                self.scanned = 0;
                return Ok(Some(i + 1));
            }
        }
        self.scanned = window.len();
        self.check_limit(buf.len(), max_len)
    }

    fn check_limit(&self, len: usize, max_len: usize) -> Result<Option<usize>, ScanError> {
        if len >= max_len {
            Err(ScanError::TooLarge)
        } else {
            Ok(None)
        }
    }
}

/// Number of leading empty lines (`\r\n`) before a request line. RFC 9112 §2.2 lets a
/// server ignore at least one; ringgate ignores a few and lets the rest fail to parse.
pub fn leading_crlf_len(buf: &[u8]) -> usize {
    let mut n = 0;
    while n + 1 < buf.len() && n < 8 && buf[n] == b'\r' && buf[n + 1] == b'\n' {
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

    #[test]
    fn leading_empty_lines() {
        assert_eq!(leading_crlf_len(b"\r\n\r\nGET"), 4);
        assert_eq!(leading_crlf_len(b"GET"), 0);
        assert_eq!(leading_crlf_len(b"\r"), 0);
    }
}
