//! An owned RESP2 frame: handy for tests, tools and the slow path; the hot path uses [`Frame`].

use super::{encode, Frame};

/// A RESP2 frame that owns its bytes.
///
/// ```
/// use ringwait::resp::{OwnedFrame, Parser};
/// let frame = OwnedFrame::Array(vec![OwnedFrame::Integer(1), OwnedFrame::Nil]);
/// let mut bytes = Vec::new();
/// frame.encode(&mut bytes);
/// let (view, _) = Parser::default().parse(&bytes).unwrap().unwrap();
/// assert_eq!(OwnedFrame::from(view), frame);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedFrame {
    /// A simple string (must not contain CR or LF).
    Simple(Vec<u8>),
    /// An error reply (must not contain CR or LF).
    Error(Vec<u8>),
    /// An integer.
    Integer(i64),
    /// A bulk string.
    Bulk(Vec<u8>),
    /// The nil bulk string.
    Nil,
    /// The nil array.
    NilArray,
    /// An array.
    Array(Vec<OwnedFrame>),
}

impl OwnedFrame {
    /// Appends the RESP2 encoding of this frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            OwnedFrame::Simple(s) => encode::write_simple(out, s),
            OwnedFrame::Error(e) => encode::write_error(out, e),
            OwnedFrame::Integer(n) => encode::write_integer(out, *n),
            OwnedFrame::Bulk(b) => encode::write_bulk(out, b),
            OwnedFrame::Nil => encode::write_nil(out),
            OwnedFrame::NilArray => encode::write_nil_array(out),
            OwnedFrame::Array(items) => {
                encode::write_array_header(out, items.len());
                for item in items {
                    item.encode(out);
                }
            }
        }
    }
}

impl From<Frame<'_>> for OwnedFrame {
    fn from(frame: Frame<'_>) -> Self {
        match frame {
            Frame::Simple(s) => OwnedFrame::Simple(s.to_vec()),
            Frame::Error(e) => OwnedFrame::Error(e.to_vec()),
            Frame::Integer(n) => OwnedFrame::Integer(n),
            Frame::Bulk(b) => OwnedFrame::Bulk(b.to_vec()),
            Frame::Nil => OwnedFrame::Nil,
            Frame::NilArray => OwnedFrame::NilArray,
            Frame::Array(items) => OwnedFrame::Array(items.iter().map(OwnedFrame::from).collect()),
        }
    }
}
