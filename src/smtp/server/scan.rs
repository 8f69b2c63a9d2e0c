//! Checks message data as it arrives, in one pass over each new chunk:
//! bare CR or LF (not part of CRLF), lines longer than the limit, and
//! bytes above 127. A CR at the very end of what has arrived is left for
//! the next chunk, since its LF may follow.

/// Scanning state for one message's data.
#[derive(Debug, Clone)]
pub(crate) struct DataScan {
    pos: usize,
    line_start: usize,
    max_line: usize,
    /// A CR or LF that is not part of a CRLF was seen.
    pub bare: bool,
    /// A line longer than the limit was seen.
    pub long_line: bool,
    /// The first such line: its number (1 for the first line of the data)
    /// and its length in octets, CRLF excluded.
    pub first_long: Option<(usize, usize)>,
    /// Line ends seen so far.
    lines: usize,
    /// A byte above 127 was seen.
    pub eight_bit: bool,
    /// A NUL byte was seen.
    pub nul: bool,
}

impl DataScan {
    /// Scans data that starts at `start` in the buffer; `max_line` of 0
    /// means no limit.
    pub fn new(start: usize, max_line: usize) -> Self {
        Self {
            pos: start,
            line_start: start,
            max_line,
            bare: false,
            long_line: false,
            first_long: None,
            lines: 0,
            eight_bit: false,
            nul: false,
        }
    }

    /// Examines what was appended to `buf` since the last call.
    pub fn scan(&mut self, buf: &[u8]) {
        // The receiver may have removed a byte it had appended (the CR of
        // a terminator): never look past the end.
        self.pos = self.pos.min(buf.len());
        self.line_start = self.line_start.min(buf.len());
        let new = &buf[self.pos..];
        if !self.eight_bit && !new.is_ascii() {
            self.eight_bit = true;
        }
        if !self.nul && memchr::memchr(0, new).is_some() {
            self.nul = true;
        }
        let mut end = buf.len();
        let base = self.pos;
        for i in memchr::memchr2_iter(b'\r', b'\n', new).map(|i| i + base) {
            if buf[i] == b'\n' {
                let crlf = i > 0 && buf[i - 1] == b'\r';
                self.bare |= !crlf;
                self.check_line(i - usize::from(crlf));
                self.line_start = i + 1;
                self.lines += 1;
            } else if i + 1 == buf.len() {
                end = i; // its LF may be in the next chunk
                break;
            } else if buf[i + 1] != b'\n' {
                self.bare = true;
            }
        }
        self.pos = end;
        self.check_line(end);
    }

    fn check_line(&mut self, line_end: usize) {
        let len = line_end.saturating_sub(self.line_start);
        if self.max_line > 0 && len > self.max_line {
            self.long_line = true;
            // A line still arriving grows: its length is the latest seen.
            match &mut self.first_long {
                Some((n, l)) if *n == self.lines + 1 => *l = (*l).max(len),
                Some(_) => {}
                None => self.first_long = Some((self.lines + 1, len)),
            }
        }
    }
}

/// Removes every NUL byte from `start` on.
pub(crate) fn strip_nul(buf: &mut Vec<u8>, start: usize) {
    let mut i = 0;
    buf.retain(|b| {
        let keep = i < start || *b != 0;
        i += 1;
        keep
    });
}

/// Rewrites every bare CR or LF from `start` on into CRLF.
pub(crate) fn normalize(buf: &mut Vec<u8>, start: usize) {
    let mut out = Vec::with_capacity(buf.len() + 64);
    out.extend_from_slice(&buf[..start]);
    let data = &buf[start..];
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'\r' if data.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
                continue;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    *buf = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_chunks(chunks: &[&[u8]], max_line: usize) -> DataScan {
        let mut buf = b"HDR".to_vec();
        let mut s = DataScan::new(3, max_line);
        for c in chunks {
            buf.extend_from_slice(c);
            s.scan(&buf);
        }
        s
    }

    #[test]
    fn crlf_across_chunks_is_not_bare() {
        let s = scan_chunks(&[b"a\r", b"\nb\r\n"], 0);
        assert!(!s.bare);
    }

    #[test]
    fn bare_endings_are_found_anywhere() {
        for case in [&b"a\nb\r\n"[..], b"a\rb\r\n", b"\n", b"a\r\r\n", b"x\r\n\n"] {
            assert!(scan_chunks(&[case], 0).bare, "{case:?}");
        }
        assert!(
            scan_chunks(&[b"a\r", b"b"], 0).bare,
            "CR then non-LF across chunks"
        );
    }

    #[test]
    fn long_lines_and_eight_bit() {
        let line = vec![b'x'; 999];
        assert!(scan_chunks(&[&line, b"\r\n"], 998).long_line);
        let s = scan_chunks(&[b"a\r\nb\r\n", &line[..600], &line[..600], b"\r\n"], 998);
        assert_eq!(s.first_long, Some((3, 1200)), "line 3, 1,200 octets");
        assert!(!scan_chunks(&[&line[..998], b"\r\n"], 998).long_line);
        assert!(
            scan_chunks(&[&line[..500], &line[..499]], 998).long_line,
            "detected before the line ends"
        );
        assert!(scan_chunks(&["é\r\n".as_bytes()], 0).eight_bit);
        assert!(!scan_chunks(&[b"plain\r\n"], 0).eight_bit);
    }

    #[test]
    fn normalize_makes_every_ending_crlf() {
        let mut b = b"HDRa\nb\rc\r\nd\r".to_vec();
        normalize(&mut b, 3);
        assert_eq!(b, b"HDRa\r\nb\r\nc\r\nd\r\n");
    }
}
