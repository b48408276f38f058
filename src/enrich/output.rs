//! The writer thread: collects the partitions' outputs (in input order in ordered mode),
//! writes JSON Lines, and applies the error policy.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Map, Value};

use super::lookup::Enriched;
use super::record::Line;
use super::{EnrichError, OnError};
use crate::element::Emitted;
use crate::operator::RecordError;
use crate::queue::{Consumer, Pop};
use crate::OrderMode;

/// What the writer wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    /// Lines written to the output.
    pub lines: u64,
    /// Of those, lookups that found nothing (the field is `null`).
    pub misses: u64,
    /// Failed records dropped (`--on-error skip`).
    pub skipped: u64,
    /// Failed records written to the side output.
    pub side_output: u64,
}

pub(crate) struct WriterSettings {
    pub mode: OrderMode,
    pub into: String,
    pub on_error: OnError,
    pub progress: Arc<AtomicU64>,
    pub stop: Arc<AtomicBool>,
}

type Item = Emitted<Enriched, Arc<Line>>;

pub(crate) fn spawn_writer(
    queues: Vec<Consumer<Item>>,
    out: Box<dyn Write + Send>,
    side: Option<Box<dyn Write + Send>>,
    settings: WriterSettings,
) -> JoinHandle<Result<WriterStats, EnrichError>> {
    std::thread::Builder::new()
        .name("ringwait-writer".into())
        .spawn(move || {
            let mut w = Writer {
                out,
                side,
                settings,
                stats: WriterStats::default(),
            };
            let result = if w.settings.mode == OrderMode::Ordered {
                w.merge_in_order(&queues)
            } else {
                w.merge_as_ready(&queues)
            };
            let flushed = w.flush();
            if result.is_err() {
                w.settings.stop.store(true, Ordering::Relaxed);
            }
            result.and(flushed).map(|()| w.stats)
        })
        .expect("spawning the writer thread")
}

struct Writer {
    out: Box<dyn Write + Send>,
    side: Option<Box<dyn Write + Send>>,
    settings: WriterSettings,
    stats: WriterStats,
}

impl Writer {
    /// Record `i` went to partition `i % P`, and each partition emits in its input order, so
    /// taking from the partitions in turn restores the global order.
    fn merge_in_order(&mut self, queues: &[Consumer<Item>]) -> Result<(), EnrichError> {
        let p = queues.len() as u64;
        let mut next = 0u64;
        loop {
            let Some(item) = queues[(next % p) as usize].pop_blocking() else {
                return Ok(()); // that partition ended: at the end of input, or it failed
            };
            if let Some(index) = index_of(&item) {
                if index != next {
                    return Err(EnrichError::Internal(format!(
                        "ordered merge expected record {next}, got {index}"
                    )));
                }
            }
            self.write_item(item)?;
            next += 1;
        }
    }

    fn merge_as_ready(&mut self, queues: &[Consumer<Item>]) -> Result<(), EnrichError> {
        let mut open: Vec<bool> = vec![true; queues.len()];
        let mut idle = 0u32;
        while open.iter().any(|o| *o) {
            let mut got = false;
            for (q, is_open) in queues.iter().zip(open.iter_mut()) {
                if !*is_open {
                    continue;
                }
                loop {
                    match q.pop() {
                        Pop::Item(item) => {
                            self.write_item(item)?;
                            got = true;
                        }
                        Pop::Empty => break,
                        Pop::Closed => {
                            *is_open = false;
                            break;
                        }
                    }
                }
            }
            if got {
                idle = 0;
            } else {
                idle += 1;
                if idle > 64 {
                    std::thread::sleep(Duration::from_micros(50));
                } else {
                    std::thread::yield_now();
                }
            }
        }
        Ok(())
    }

    fn write_item(&mut self, item: Item) -> Result<(), EnrichError> {
        match item {
            Emitted::Record {
                value: (line, found),
                ..
            } => {
                let mut object = take_object(line);
                if found.is_none() {
                    self.stats.misses += 1;
                }
                let value = match found {
                    Some(bytes) => Value::String(String::from_utf8_lossy(&bytes).into_owned()),
                    None => Value::Null,
                };
                object.insert(self.settings.into.clone(), value);
                self.write_json(&object)?;
                self.stats.lines += 1;
                self.settings.progress.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Emitted::Failed { input, error, .. } => self.failed(input, error),
            Emitted::Watermark(_) => Ok(()),
        }
    }

    fn failed(&mut self, line: Arc<Line>, error: RecordError) -> Result<(), EnrichError> {
        self.settings.progress.fetch_add(1, Ordering::Relaxed);
        match &self.settings.on_error {
            OnError::Fail => Err(EnrichError::RecordFailed {
                line: line.number,
                error: error.to_string(),
            }),
            OnError::Skip => {
                self.stats.skipped += 1;
                Ok(())
            }
            OnError::SideOutput(path) => {
                let number = line.number;
                let mut entry = Map::new();
                entry.insert("line".into(), Value::from(number));
                entry.insert("error".into(), Value::from(error.to_string()));
                entry.insert("record".into(), Value::Object(take_object(line)));
                let side = self.side.as_mut().expect("side output opened");
                serde_json::to_writer(&mut *side, &entry)
                    .map_err(std::io::Error::from)
                    .and_then(|()| side.write_all(b"\n"))
                    .map_err(|cause| EnrichError::Io {
                        what: "write the side output",
                        path: path.display().to_string(),
                        cause,
                    })?;
                self.stats.side_output += 1;
                Ok(())
            }
        }
    }

    fn write_json(&mut self, object: &Map<String, Value>) -> Result<(), EnrichError> {
        serde_json::to_writer(&mut self.out, object)
            .map_err(std::io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|cause| EnrichError::Io {
                what: "write the output",
                path: "output".into(),
                cause,
            })
    }

    fn flush(&mut self) -> Result<(), EnrichError> {
        self.out.flush().map_err(|cause| EnrichError::Io {
            what: "flush the output",
            path: "output".into(),
            cause,
        })?;
        if let Some(side) = self.side.as_mut() {
            side.flush().map_err(|cause| EnrichError::Io {
                what: "flush the side output",
                path: "side output".into(),
                cause,
            })?;
        }
        Ok(())
    }
}

fn index_of(item: &Item) -> Option<u64> {
    match item {
        Emitted::Record { value, .. } => Some(value.0.index),
        Emitted::Failed { input, .. } => Some(input.index),
        Emitted::Watermark(_) => None,
    }
}

/// The line's object, without a copy when the writer holds the only reference (the usual case:
/// the operator released its copy when it emitted the record).
fn take_object(line: Arc<Line>) -> Map<String, Value> {
    match Arc::try_unwrap(line) {
        Ok(l) => l.object,
        Err(shared) => shared.object.clone(),
    }
}
