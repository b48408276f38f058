//! `ringwait-baseline enrich`: the plain tokio program doing the job of `ringwait enrich` —
//! read JSON Lines, `GET` each line's key from a Redis-protocol store, write each line back
//! with one field added — written the way a careful Rust user would: one `current_thread`
//! runtime, serde_json (`preserve_order` + `arbitrary_precision`, so field order and number
//! spelling survive the round trip), one `redis::aio::MultiplexedConnection` cloned per
//! request, and `futures::StreamExt::buffered(capacity)` for ordered concurrency.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use futures::stream::{self, StreamExt};
use redis::AsyncCommands;
use serde_json::{Map, Value};

use crate::runner::new_histogram;
use crate::BoxError;

#[derive(Args)]
pub struct EnrichArgs {
    /// JSON Lines input: one JSON object per line.
    #[arg(long)]
    input: PathBuf,
    /// Output: each input object with the --into field added (or replaced), one per line.
    #[arg(long)]
    output: PathBuf,
    /// Redis URL of the store the keys are looked up in.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// Field holding the lookup key (a string, or an integer looked up as its decimal digits).
    #[arg(long, default_value = "key")]
    key: String,
    /// Field that receives the value, as a JSON string; null on a miss.
    #[arg(long, default_value = "value")]
    into: String,
    /// Lookups in flight: the C of buffered(C).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    capacity: u64,
    /// A moka cache of this many entries in front of the store (0: none), values kept
    /// --cache-ttl-ms; concurrent misses of one key share one GET (moka's try_get_with).
    #[arg(long, default_value_t = 0)]
    cache_size: u64,
    /// How long a cached value is used.
    #[arg(long, default_value_t = 60_000)]
    cache_ttl_ms: u64,
}

/// The looked-up value of a key: from the cache when there is one (a miss there fetches
/// it, once for all concurrent misses of the key), else straight from the store.
async fn lookup(
    conn: &mut redis::aio::MultiplexedConnection,
    cache: Option<&moka::future::Cache<String, Option<String>>>,
    key: String,
) -> Result<Option<String>, BoxError> {
    let Some(cache) = cache else {
        return Ok(conn.get(&key).await?);
    };
    let mut conn = conn.clone();
    let fetch_key = key.clone();
    cache
        .try_get_with(key, async move { conn.get::<_, Option<String>>(&fetch_key).await })
        .await
        .map_err(|e| format!("{e}").into())
}

pub fn run(args: &EnrichArgs) -> Result<(), BoxError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(enrich(args))
}

/// The lookup key of a parsed line: a string as is, an integer as its decimal digits.
fn key_of(obj: &Map<String, Value>, field: &str, line: u64) -> Result<String, BoxError> {
    match obj.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) if n.as_u64().is_some() || n.as_i64().is_some() => Ok(n
            .as_u64()
            .map_or_else(|| n.as_i64().unwrap().to_string(), |u| u.to_string())),
        Some(v) => Err(format!(
            "line {line}: the key field {field:?} must be a string or an integer, found {v}"
        )
        .into()),
        None => Err(format!("line {line}: the key field {field:?} is missing").into()),
    }
}

async fn enrich(args: &EnrichArgs) -> Result<(), BoxError> {
    let conn = redis::Client::open(args.redis.as_str())
        .map_err(|e| format!("bad Redis URL {}: {e}", args.redis))?
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", args.redis))?;
    let input = File::open(&args.input)
        .map_err(|e| format!("cannot open {}: {e}", args.input.display()))?;
    let output = File::create(&args.output)
        .map_err(|e| format!("cannot create {}: {e}", args.output.display()))?;
    let mut out = BufWriter::with_capacity(1 << 16, output);
    let start = Instant::now();

    // A regular file: reading it with std's BufReader inside the stream is what a user writes
    // (tokio::fs would only move the same read(2) calls to the blocking pool).
    let lines = BufReader::with_capacity(1 << 16, input).lines();
    let key_field = args.key.as_str();
    let into = args.into.as_str();
    let cache = (args.cache_size > 0).then(|| {
        moka::future::Cache::builder()
            .max_capacity(args.cache_size)
            .time_to_live(std::time::Duration::from_millis(args.cache_ttl_ms))
            .build()
    });
    let cache = cache.as_ref();
    let mut results = stream::iter(lines.zip(1u64..))
        .map(|(text, line)| {
            let intake = Instant::now();
            let mut conn = conn.clone();
            async move {
                let text = text.map_err(|e| format!("line {line}: cannot read: {e}"))?;
                let mut obj: Map<String, Value> = serde_json::from_str(&text)
                    .map_err(|e| format!("line {line}: not a JSON object: {e}"))?;
                let key = key_of(&obj, key_field, line)?;
                let value = lookup(&mut conn, cache, key.clone())
                    .await
                    .map_err(|e| format!("line {line}: GET {key}: {e}"))?;
                obj.insert(into.to_owned(), value.map_or(Value::Null, Value::String));
                Ok::<_, BoxError>((obj, intake))
            }
        })
        .buffered(args.capacity as usize);

    let mut hist = new_histogram();
    let mut records = 0u64;
    let mut misses = 0u64;
    while let Some(r) = results.next().await {
        let (obj, intake) = r?;
        hist.saturating_record(intake.elapsed().as_nanos() as u64);
        if obj.get(into).is_some_and(Value::is_null) {
            misses += 1;
        }
        serde_json::to_writer(&mut out, &obj)?;
        out.write_all(b"\n")?;
        records += 1;
    }
    out.flush()?;
    // Durable like ringwait's output (which fsyncs its file before renaming it into place).
    out.into_inner().map_err(|e| e.into_error())?.sync_data()?;
    let elapsed = start.elapsed().as_secs_f64();
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "workload=enrich impl={} records={records} elapsed_s={elapsed:.3} \
         records_per_s={:.1} misses={misses} p50_us={:.3} p99_us={:.3} p999_us={:.3} max_us={:.3}",
        if cache.is_some() { "tokio-moka" } else { "tokio-serde" },
        records as f64 / elapsed,
        us(0.50),
        us(0.99),
        us(0.999),
        hist.max() as f64 / 1000.0
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_field_order_and_number_spelling() {
        let line = r#"{"id":0,"ts":1765090000000000,"px":100.10,"big":123456789012345678901234567890,"neg":-0.0,"key":"k:7"}"#;
        let mut obj: Map<String, Value> = serde_json::from_str(line).unwrap();
        assert_eq!(key_of(&obj, "key", 1).unwrap(), "k:7");
        obj.insert("value".into(), Value::String("v".into()));
        let mut want = line[..line.len() - 1].to_owned();
        want.push_str(r#","value":"v"}"#);
        assert_eq!(serde_json::to_string(&obj).unwrap(), want);
        // Not everything survives: an exponent gets a sign (ringwait copies the line instead).
        let e: Map<String, Value> = serde_json::from_str(r#"{"x":1.50e3}"#).unwrap();
        assert_eq!(serde_json::to_string(&e).unwrap(), r#"{"x":1.50e+3}"#);
    }

    #[test]
    fn keys_are_strings_or_integers() {
        let obj: Map<String, Value> =
            serde_json::from_str(r#"{"a":7,"b":-3,"c":1.5,"d":null}"#).unwrap();
        assert_eq!(key_of(&obj, "a", 1).unwrap(), "7");
        assert_eq!(key_of(&obj, "b", 1).unwrap(), "-3");
        assert!(key_of(&obj, "c", 4)
            .unwrap_err()
            .to_string()
            .starts_with("line 4:"));
        assert!(key_of(&obj, "d", 4).is_err());
        assert!(key_of(&obj, "zz", 5)
            .unwrap_err()
            .to_string()
            .contains("missing"));
    }
}
