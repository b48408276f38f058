//! Fuzzes the RESP2 parser: arbitrary bytes, parsed as a stream of frames with tight and
//! default limits, must never panic, and every frame must re-encode to what was consumed
//! (modulo integer spelling such as `:007`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringwait::resp::{Limits, OwnedFrame, Parser};

fuzz_target!(|data: &[u8]| {
    let tight = Parser::new(Limits {
        max_bulk_len: 1024,
        max_array_len: 64,
        max_depth: 4,
        max_line_len: 256,
    });
    for parser in [tight, Parser::default()] {
        let mut at = 0;
        while let Ok(Some((frame, used))) = parser.parse(&data[at..]) {
            assert!(used > 0 && at + used <= data.len());
            let owned = OwnedFrame::from(frame);
            let mut again = Vec::new();
            owned.encode(&mut again);
            let (reparsed, n) = parser
                .parse(&again)
                .expect("re-encoded frame parses")
                .expect("re-encoded frame is complete");
            assert_eq!(n, again.len());
            assert_eq!(OwnedFrame::from(reparsed), owned);
            at += used;
        }
    }
});
