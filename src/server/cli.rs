//! Command-line arguments of `ringwait serve`, ready to be flattened into the binary's CLI.

use std::net::SocketAddr;
use std::time::Duration;

use super::{Fault, FaultPlan, Flap, Latency, ServerConfig, DEFAULT_IO_MEMORY};

/// Arguments of `ringwait serve` (use with `#[command(flatten)]` or as a subcommand's args).
///
/// ```
/// use clap::Parser;
/// use ringwait::server::{Fault, Latency, ServeArgs};
/// #[derive(Parser)]
/// struct Cli {
///     #[command(flatten)]
///     serve: ServeArgs,
/// }
/// let cli = Cli::parse_from(["serve", "--listen", "127.0.0.1:7000", "--keys", "10",
///                            "--latency-us", "100-300", "--fault", "reset", "--flap-ms", "900,100"]);
/// let config = cli.serve.to_config();
/// assert_eq!(config.keys, 10);
/// assert_eq!(config.faults.fault, Fault::Reset);
/// assert!(matches!(config.faults.latency, Latency::Uniform { .. }));
/// ```
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:6380")]
    pub listen: SocketAddr,
    /// Number of generated keys k:0 .. k:{N-1} (and hashes h:0 .. h:{N-1}).
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// Added latency per batch of replies, in microseconds: `200` (fixed), `100-500`
    /// (uniform), or `BASE,SLOW@PCT` (e.g. `50,5000@1`: 1% of batches take 5 ms).
    #[arg(long, value_parser = parse_latency_us)]
    pub latency_us: Option<Latency>,
    /// Injected fault: none, refuse, reset, blackhole or malformed.
    #[arg(long, default_value = "none", value_parser = parse_fault)]
    pub fault: Fault,
    /// Apply the fault and latency only in alternating periods: `HEALTHY_MS,FAULTY_MS`.
    #[arg(long, value_parser = parse_flap_ms)]
    pub flap_ms: Option<Flap>,
    /// Pin the server thread to this CPU.
    #[arg(long)]
    pub cpu: Option<usize>,
}

impl ServeArgs {
    /// The server configuration these arguments describe.
    pub fn to_config(&self) -> ServerConfig {
        ServerConfig {
            listen: self.listen,
            keys: self.keys,
            hashes: true,
            faults: FaultPlan {
                fault: self.fault,
                latency: self.latency_us.unwrap_or_default(),
                flap: self.flap_ms,
            },
            io_memory: DEFAULT_IO_MEMORY,
            cpu: self.cpu,
        }
    }
}

/// Parses a fault name: `none`, `refuse`, `reset`, `blackhole` (or `black-hole`), `malformed`.
pub fn parse_fault(s: &str) -> Result<Fault, String> {
    match s.to_ascii_lowercase().as_str() {
        "none" => Ok(Fault::None),
        "refuse" => Ok(Fault::Refuse),
        "reset" => Ok(Fault::Reset),
        "blackhole" | "black-hole" => Ok(Fault::BlackHole),
        "malformed" => Ok(Fault::Malformed),
        _ => Err(format!(
            "unknown fault {s:?}: use none, refuse, reset, blackhole or malformed"
        )),
    }
}

fn micros(s: &str) -> Result<Duration, String> {
    s.trim()
        .parse::<u64>()
        .map(Duration::from_micros)
        .map_err(|_| format!("{s:?} is not a whole number of microseconds"))
}

/// Parses a latency in microseconds: `200`, `100-500` or `BASE,SLOW@PCT`.
pub fn parse_latency_us(s: &str) -> Result<Latency, String> {
    if let Some((base, rest)) = s.split_once(',') {
        let (slow, pct) = rest
            .split_once('@')
            .ok_or_else(|| format!("{s:?}: a mix is written BASE,SLOW@PCT, e.g. 50,5000@1"))?;
        let pct: f64 = pct
            .trim()
            .trim_end_matches('%')
            .parse()
            .map_err(|_| format!("{pct:?} is not a percentage"))?;
        if !(0.0..=100.0).contains(&pct) {
            return Err(format!("{pct} is not a percentage between 0 and 100"));
        }
        return Ok(Latency::Mix {
            base: micros(base)?,
            slow: micros(slow)?,
            slow_per_million: (pct * 10_000.0).round() as u32,
        });
    }
    if let Some((min, max)) = s.split_once('-') {
        let (min, max) = (micros(min)?, micros(max)?);
        if min > max {
            return Err(format!("{s:?}: the range must go from low to high"));
        }
        return Ok(Latency::Uniform { min, max });
    }
    Ok(Latency::Fixed(micros(s)?))
}

/// Parses a flapping cycle `HEALTHY_MS,FAULTY_MS`.
pub fn parse_flap_ms(s: &str) -> Result<Flap, String> {
    let (h, f) = s
        .split_once(',')
        .ok_or_else(|| format!("{s:?}: write HEALTHY_MS,FAULTY_MS, e.g. 900,100"))?;
    let ms = |x: &str| {
        x.trim()
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("{x:?} is not a whole number of milliseconds"))
    };
    let flap = Flap {
        healthy: ms(h)?,
        faulty: ms(f)?,
    };
    if flap.healthy.is_zero() && flap.faulty.is_zero() {
        return Err("a flapping cycle needs a non-zero period".into());
    }
    Ok(flap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_forms_parse() {
        assert_eq!(
            parse_latency_us("200"),
            Ok(Latency::Fixed(Duration::from_micros(200)))
        );
        assert_eq!(
            parse_latency_us("50,5000@1"),
            Ok(Latency::Mix {
                base: Duration::from_micros(50),
                slow: Duration::from_micros(5000),
                slow_per_million: 10_000
            })
        );
        assert!(parse_latency_us("5-1").is_err());
        assert!(parse_latency_us("x").is_err());
        assert!(parse_fault("nope").is_err());
        assert!(parse_flap_ms("0,0").is_err());
    }
}
