//! Property tests of the RESP2 codec: any frame survives encoding and being split anywhere;
//! garbage never panics the parser.

use proptest::prelude::*;
use ringwait::resp::{Limits, OwnedFrame, Parser};

fn line_bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
        0..16,
    )
}

fn frame() -> impl Strategy<Value = OwnedFrame> {
    let leaf = prop_oneof![
        line_bytes().prop_map(OwnedFrame::Simple),
        line_bytes().prop_map(OwnedFrame::Error),
        any::<i64>().prop_map(OwnedFrame::Integer),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(OwnedFrame::Bulk),
        Just(OwnedFrame::Nil),
        Just(OwnedFrame::NilArray),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        proptest::collection::vec(inner, 0..8).prop_map(OwnedFrame::Array)
    })
}

proptest! {
    #[test]
    fn every_prefix_is_incomplete_and_the_whole_parses_back(f in frame(), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
        let mut bytes = Vec::new();
        f.encode(&mut bytes);
        let parser = Parser::default();
        for split in 0..bytes.len() {
            prop_assert_eq!(parser.parse(&bytes[..split]), Ok(None), "prefix of {} bytes", split);
        }
        let whole_len = bytes.len();
        bytes.extend_from_slice(&tail);
        let (view, used) = parser.parse(&bytes).unwrap().unwrap();
        prop_assert_eq!(used, whole_len);
        prop_assert_eq!(OwnedFrame::from(view), f);
    }

    #[test]
    fn a_stream_of_frames_parses_back_in_order(frames in proptest::collection::vec(frame(), 1..6)) {
        let mut bytes = Vec::new();
        for f in &frames {
            f.encode(&mut bytes);
        }
        let parser = Parser::default();
        let mut at = 0;
        let mut got = Vec::new();
        while let Some((view, used)) = parser.parse(&bytes[at..]).unwrap() {
            got.push(OwnedFrame::from(view));
            at += used;
        }
        prop_assert_eq!(at, bytes.len());
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let parser = Parser::new(Limits { max_bulk_len: 64, max_array_len: 8, max_depth: 3, max_line_len: 32 });
        if let Ok(Some((view, used))) = parser.parse(&bytes) {
            prop_assert!(used <= bytes.len());
            let _ = OwnedFrame::from(view);
        }
        let _ = Parser::default().parse(&bytes);
    }

    #[test]
    fn mutated_valid_frames_never_panic(f in frame(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = Vec::new();
        f.encode(&mut bytes);
        if !bytes.is_empty() {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if let Ok(Some((view, used))) = Parser::default().parse(&bytes) {
            prop_assert!(used <= bytes.len());
            let _ = OwnedFrame::from(view);
        }
    }
}
