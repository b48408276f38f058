//! `ringwait-baseline load`: fills Redis with the `redis` workload's keyspace.

use std::time::Instant;

use clap::Args;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use crate::data::{key_name, value_of, KEYSPACE};
use crate::BoxError;

#[derive(Args)]
pub struct LoadArgs {
    /// Redis URL.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// Keys to write: k:0 .. k:<keys-1>.
    #[arg(long, default_value_t = KEYSPACE)]
    keys: u64,
    /// SETs per pipelined batch.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
}

pub fn run(args: &LoadArgs) -> Result<(), BoxError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(fill(args))
}

/// A connection without the default 500 ms response timeout (a 10k-SET pipeline may exceed it).
async fn connect(url: &str) -> Result<MultiplexedConnection, BoxError> {
    let config = AsyncConnectionConfig::new().set_response_timeout(None);
    let client = redis::Client::open(url).map_err(|e| format!("bad Redis URL {url}: {e}"))?;
    let con = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    Ok(con)
}

async fn dbsize(con: &mut MultiplexedConnection) -> Result<u64, BoxError> {
    Ok(redis::cmd("DBSIZE").query_async(con).await?)
}

/// True when `k:<k>` holds exactly the expected value.
async fn holds(con: &mut MultiplexedConnection, k: u64) -> Result<bool, BoxError> {
    let v: Option<Vec<u8>> = redis::cmd("GET").arg(key_name(k)).query_async(con).await?;
    Ok(v.as_deref() == Some(&value_of(k)[..]))
}

async fn fill(args: &LoadArgs) -> Result<(), BoxError> {
    let mut con = connect(&args.redis).await?;
    let before = dbsize(&mut con).await?;
    if args.keys > 0 && before == args.keys && holds(&mut con, args.keys - 1).await? {
        eprintln!("load: DBSIZE is already {before}, nothing to do");
        return Ok(());
    }
    let start = Instant::now();
    let mut i = 0;
    while i < args.keys {
        let end = (i + args.batch).min(args.keys);
        let mut pipe = redis::pipe();
        for k in i..end {
            pipe.set(key_name(k), &value_of(k)[..]).ignore();
        }
        pipe.query_async::<()>(&mut con).await?;
        i = end;
    }
    let after = dbsize(&mut con).await?;
    eprintln!(
        "load: wrote {} keys in {:.2} s, DBSIZE {before} -> {after}",
        args.keys,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Refuses to run the redis workload on a store that does not hold the keyspace.
pub async fn require_loaded(url: &str) -> Result<(), BoxError> {
    let mut con = connect(url).await?;
    let n = dbsize(&mut con).await?;
    if n < KEYSPACE || !holds(&mut con, 0).await? || !holds(&mut con, KEYSPACE - 1).await? {
        return Err(format!(
            "{url} does not hold k:0..k:{} (DBSIZE {n}); run `ringwait-baseline load --redis {url}` first",
            KEYSPACE - 1
        )
        .into());
    }
    Ok(())
}
