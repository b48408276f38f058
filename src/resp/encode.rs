//! Allocation-free RESP2 encoding into caller-provided buffers.

/// Formats `n` in decimal into the end of `buf`; returns the start of the digits.
pub(crate) fn format_i64(n: i64, buf: &mut [u8; 20]) -> usize {
    let mut pos = buf.len();
    let mut v = n.unsigned_abs();
    loop {
        pos -= 1;
        buf[pos] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        pos -= 1;
        buf[pos] = b'-';
    }
    pos
}

/// Appends `prefix`, the decimal `n` and CRLF.
fn write_line_number(out: &mut Vec<u8>, prefix: u8, n: i64) {
    let mut digits = [0u8; 20];
    let start = format_i64(n, &mut digits);
    out.push(prefix);
    out.extend_from_slice(&digits[start..]);
    out.extend_from_slice(b"\r\n");
}

/// Appends an array header `*n\r\n`.
pub fn write_array_header(out: &mut Vec<u8>, n: usize) {
    write_line_number(out, b'*', n as i64);
}

/// Appends a bulk string `$len\r\nbytes\r\n`.
pub fn write_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    write_line_number(out, b'$', bytes.len() as i64);
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// Appends a bulk string holding the decimal representation of `n`.
pub fn write_bulk_integer(out: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let start = format_i64(n, &mut digits);
    write_bulk(out, &digits[start..]);
}

/// Appends the nil bulk string `$-1\r\n`.
pub fn write_nil(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
}

/// Appends the nil array `*-1\r\n`.
pub fn write_nil_array(out: &mut Vec<u8>) {
    out.extend_from_slice(b"*-1\r\n");
}

/// Appends an integer reply `:n\r\n`.
pub fn write_integer(out: &mut Vec<u8>, n: i64) {
    write_line_number(out, b':', n);
}

/// Appends a simple string `+s\r\n`. `s` must not contain CR or LF.
pub fn write_simple(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'+');
    out.extend_from_slice(s);
    out.extend_from_slice(b"\r\n");
}

/// Appends an error reply `-message\r\n`. CR and LF in `message` are replaced by spaces.
pub fn write_error(out: &mut Vec<u8>, message: &[u8]) {
    out.push(b'-');
    out.extend(
        message
            .iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// Appends a command (an array of bulk strings) to `out`.
///
/// ```
/// let mut out = Vec::new();
/// ringwait::resp::encode_command(&mut out, &[b"MGET", b"a", b"bc"]);
/// assert_eq!(out, b"*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$2\r\nbc\r\n");
/// ```
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    write_array_header(out, args.len());
    for arg in args {
        write_bulk(out, arg);
    }
}

/// Writes a command whose number of arguments is known up front, one argument at a time
/// (for commands built from iterators, like `MGET` over a batch of keys).
///
/// ```
/// use ringwait::resp::CommandEncoder;
/// let mut out = Vec::new();
/// let mut cmd = CommandEncoder::begin(&mut out, 3);
/// cmd.arg(b"SELECT");
/// cmd.arg_int(-7);
/// cmd.arg(b"x");
/// cmd.finish();
/// assert_eq!(out, b"*3\r\n$6\r\nSELECT\r\n$2\r\n-7\r\n$1\r\nx\r\n");
/// ```
#[derive(Debug)]
pub struct CommandEncoder<'a> {
    out: &'a mut Vec<u8>,
    remaining: usize,
}

impl<'a> CommandEncoder<'a> {
    /// Writes the header of a command of `args` arguments.
    pub fn begin(out: &'a mut Vec<u8>, args: usize) -> Self {
        write_array_header(out, args);
        CommandEncoder {
            out,
            remaining: args,
        }
    }

    /// Appends one argument.
    pub fn arg(&mut self, bytes: &[u8]) -> &mut Self {
        debug_assert!(self.remaining > 0, "more arguments than announced");
        self.remaining = self.remaining.saturating_sub(1);
        write_bulk(self.out, bytes);
        self
    }

    /// Appends one integer argument, formatted in decimal.
    pub fn arg_int(&mut self, n: i64) -> &mut Self {
        debug_assert!(self.remaining > 0, "more arguments than announced");
        self.remaining = self.remaining.saturating_sub(1);
        write_bulk_integer(self.out, n);
        self
    }

    /// Ends the command; in debug builds checks that every announced argument was written.
    pub fn finish(self) {
        debug_assert_eq!(self.remaining, 0, "fewer arguments than announced");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_format_like_std() {
        for n in [0, 1, -1, 9, 10, 12345, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            write_integer(&mut out, n);
            assert_eq!(out, format!(":{n}\r\n").into_bytes());
        }
    }

    #[test]
    fn encoding_into_a_large_enough_buffer_does_not_reallocate() {
        let mut out = Vec::with_capacity(256);
        let ptr = out.as_ptr();
        for _ in 0..3 {
            out.clear();
            encode_command(&mut out, &[b"GET", b"k:123456"]);
            write_bulk(&mut out, &[b'x'; 64]);
        }
        assert_eq!(ptr, out.as_ptr());
    }

    #[test]
    fn error_messages_cannot_break_framing() {
        let mut out = Vec::new();
        write_error(&mut out, b"ERR a\r\nb");
        assert_eq!(out, b"-ERR a  b\r\n");
    }
}
