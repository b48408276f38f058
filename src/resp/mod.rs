//! RESP2 (REdis Serialization Protocol) codec: an incremental, zero-copy parser and an
//! allocation-free encoder.
//!
//! # Parsing
//!
//! [`Parser::parse`] looks at the front of a byte buffer and returns
//! * `Ok(Some((frame, consumed)))` when a whole frame is there: `frame` is a [`Frame`] that
//!   borrows from the buffer (simple strings, errors and bulk strings are slices of it, nothing
//!   is copied or allocated), and `consumed` is how many bytes it took;
//! * `Ok(None)` when the buffer holds only the beginning of a frame: read more and call again
//!   (the parser keeps no state between calls);
//! * `Err(ProtocolError)` when the bytes cannot be RESP2. Every limit ([`Limits`]) is checked
//!   before any work proportional to a length announced by the peer, so hostile input cannot
//!   make the parser allocate, loop long or panic.
//!
//! Arrays are validated once while parsing and then walked lazily with [`ArrayView::iter`].
//!
//! # Encoding
//!
//! [`encode_command`] writes `*N\r\n$len\r\narg\r\n...` into a caller-provided `Vec<u8>`;
//! the `write_*` functions write single replies (used by the built-in server). Integers are
//! formatted on the stack, so encoding into a buffer with enough capacity never allocates.
//!
//! ```
//! use ringwait::resp::{encode_command, Frame, Parser};
//!
//! let mut buf = Vec::with_capacity(64);
//! encode_command(&mut buf, &[b"GET", b"k:1"]);
//! assert_eq!(buf, b"*2\r\n$3\r\nGET\r\n$3\r\nk:1\r\n");
//!
//! let parser = Parser::default();
//! assert_eq!(parser.parse(&buf[..5]).unwrap(), None); // incomplete
//! let (frame, used) = parser.parse(&buf).unwrap().unwrap();
//! assert_eq!(used, buf.len());
//! let args: Vec<&[u8]> = match frame {
//!     Frame::Array(items) => items.iter().filter_map(|f| f.as_bytes()).collect(),
//!     _ => unreachable!(),
//! };
//! assert_eq!(args, [&b"GET"[..], &b"k:1"[..]]);
//! ```

pub(crate) mod encode;
mod error;
mod owned;
mod parse;

pub use encode::{
    encode_command, write_array_header, write_bulk, write_bulk_integer, write_error, write_integer,
    write_nil, write_nil_array, write_simple, CommandEncoder,
};
pub use error::ProtocolError;
pub use owned::OwnedFrame;
pub use parse::{ArrayIter, ArrayView, Frame, Limits, Parser};
