//! Protocol errors of the RESP2 parser.

/// Why a byte sequence is not valid RESP2 (or exceeds a configured [`Limits`](super::Limits)).
///
/// Offsets are counted from the start of the buffer given to [`Parser::parse`](super::Parser::parse).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A frame starts with a byte that is not one of `+ - : $ *`.
    #[error("bad RESP type byte 0x{byte:02x} at offset {offset}")]
    BadTypeByte {
        /// The offending byte.
        byte: u8,
        /// Where it is.
        offset: usize,
    },
    /// A bulk or array length is not a decimal number, or is negative other than `-1`.
    #[error("bad RESP length at offset {offset}")]
    BadLength {
        /// Where the length starts.
        offset: usize,
    },
    /// An integer reply (`:`) is not a decimal `i64`.
    #[error("bad RESP integer at offset {offset}")]
    BadInteger {
        /// Where the integer starts.
        offset: usize,
    },
    /// A line or a bulk payload is not terminated by `\r\n`.
    #[error("missing CRLF at offset {offset}")]
    MissingCrlf {
        /// Where `\r\n` was expected.
        offset: usize,
    },
    /// Arrays nested deeper than [`Limits::max_depth`](super::Limits::max_depth).
    #[error("RESP arrays nested deeper than {max}")]
    TooDeep {
        /// The configured limit.
        max: usize,
    },
    /// A bulk string announced longer than [`Limits::max_bulk_len`](super::Limits::max_bulk_len).
    #[error("RESP bulk string of {len} bytes exceeds the limit of {max}")]
    BulkTooLong {
        /// The announced length.
        len: u64,
        /// The configured limit.
        max: usize,
    },
    /// An array announced with more elements than
    /// [`Limits::max_array_len`](super::Limits::max_array_len).
    #[error("RESP array of {len} elements exceeds the limit of {max}")]
    TooManyElements {
        /// The announced number of elements.
        len: u64,
        /// The configured limit.
        max: usize,
    },
    /// A simple string, error or number line longer than
    /// [`Limits::max_line_len`](super::Limits::max_line_len) without its `\r\n`.
    #[error("RESP line longer than {max} bytes without CRLF")]
    LineTooLong {
        /// The configured limit.
        max: usize,
    },
}
