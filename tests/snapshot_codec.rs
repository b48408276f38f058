//! The record codec through the public API: what an operator puts in a snapshot payload.

use ringwait::snapshot::{decode_records, encode_records, DecodeError, SnapshotCodec};

#[test]
fn a_ring_of_in_flight_records_round_trips_through_a_reused_buffer() {
    let first: Vec<(u64, String)> = (0..1000).map(|i| (i, format!("k:{i}"))).collect();
    let second: Vec<(u64, String)> = vec![(7, String::new())];
    let mut buf = Vec::new();
    for records in [&first, &second] {
        buf.clear();
        assert_eq!(
            encode_records(records.iter(), &mut buf),
            records.len() as u64
        );
        assert_eq!(&decode_records::<(u64, String)>(&buf).unwrap(), records);
    }
}

#[test]
fn twenty_four_byte_records_take_twenty_four_bytes() {
    let records: Vec<(u64, (i64, u64))> = (0..1000).map(|i| (i, (-(i as i64), i * 3))).collect();
    let mut buf = Vec::new();
    encode_records(&records, &mut buf);
    assert_eq!(buf.len(), 8 + 1000 * 24);
}

#[test]
fn absurd_record_count_fails_before_allocating() {
    let mut buf = Vec::new();
    (1u64 << 62).encode(&mut buf);
    1u64.encode(&mut buf);
    assert_eq!(
        decode_records::<u64>(&buf),
        Err(DecodeError::CountTooLarge {
            count: 1 << 62,
            remaining: 8
        })
    );
}

#[test]
fn absurd_string_length_fails_before_allocating() {
    let mut buf = Vec::new();
    1u64.encode(&mut buf);
    (u64::MAX - 1).encode(&mut buf);
    assert_eq!(
        decode_records::<String>(&buf),
        Err(DecodeError::LengthTooLarge {
            len: u64::MAX - 1,
            remaining: 0
        })
    );
}

#[test]
fn record_cut_short_is_an_unexpected_end_naming_the_sizes() {
    let mut buf = Vec::new();
    (1u64, 2i64).encode(&mut buf);
    let mut input = &buf[..13];
    assert_eq!(
        <(u64, i64)>::decode(&mut input),
        Err(DecodeError::UnexpectedEnd {
            needed: 8,
            remaining: 5
        })
    );
    assert_eq!(
        DecodeError::UnexpectedEnd {
            needed: 8,
            remaining: 5
        }
        .to_string(),
        "input ends early: 8 bytes needed, 5 left"
    );
    // In a framed payload the count check already sees that the records cannot fit.
    let mut framed = Vec::new();
    encode_records(&[(1u64, 2i64)], &mut framed);
    assert!(matches!(
        decode_records::<(u64, i64)>(&framed[..framed.len() - 3]),
        Err(DecodeError::CountTooLarge {
            count: 1,
            remaining: 13
        })
    ));
}

#[test]
fn every_truncation_of_an_encoded_payload_is_an_error_not_a_panic() {
    let records: Vec<(Vec<u8>, (String, i64))> = (0..20)
        .map(|i| (vec![i as u8; i], ("é".repeat(i), i as i64)))
        .collect();
    let mut buf = Vec::new();
    encode_records(&records, &mut buf);
    for len in 0..buf.len() {
        assert!(
            decode_records::<(Vec<u8>, (String, i64))>(&buf[..len]).is_err(),
            "len {len}"
        );
    }
    assert_eq!(
        decode_records::<(Vec<u8>, (String, i64))>(&buf).unwrap(),
        records
    );
}
