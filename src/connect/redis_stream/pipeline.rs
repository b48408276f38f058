//! [`CommitPipeline`]: commit batches sent on one connection to the output's server, their
//! replies read in order. A batch read fresh (input and output on one server) goes as a
//! watched transaction of plain commands (see [`GUARD_SCRIPT`](super::GUARD_SCRIPT)); any
//! other batch, a batch the guard refused, and every batch sent again after a lost
//! connection go as the [`SCRIPT`](super::SCRIPT), which is right however often a batch
//! is sent.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use super::commit::{commit_counts, CommitCounts, EncodedBatch, Watched};
use super::conn::{BlockingConn, StreamConnError};
use crate::resp::{encode_command, Frame};

/// A batch the server answered.
#[derive(Debug)]
pub struct Committed {
    /// The batch (its two-server `XACK`s are still to send).
    pub batch: EncodedBatch,
    /// When it was first sent.
    pub sent_at: Instant,
    /// What the commit did.
    pub counts: CommitCounts,
}

/// How a request in flight was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// The script.
    Eval,
    /// The watched transaction.
    Watched,
    /// `DEL` of the guard.
    Unguard,
}

/// A request in flight, and what its replies said so far.
#[derive(Debug)]
struct Sent {
    batch: Option<EncodedBatch>,
    sent_at: Instant,
    form: Form,
    /// Replies read (a watched batch has several).
    read: usize,
    /// The guard script's answer (`Err`: its error).
    guard: Option<Result<bool, String>>,
    /// The first command the transaction refused to queue.
    queue_error: Option<String>,
}

/// What a request's replies came to.
enum Outcome {
    Committed(CommitCounts),
    /// The guard refused the watched batch: nothing of it was done.
    Refused,
    Unguarded,
}

/// Commit batches in flight on one connection to the output's server, their replies read in
/// order. A batch read fresh (input and output on one server) goes as a watched transaction
/// of plain commands (see [`GUARD_SCRIPT`](super::GUARD_SCRIPT)); any other batch, a batch
/// the guard refused with every watched batch behind it (sent again in their order), and
/// every batch sent again after a lost connection go as the [`SCRIPT`](super::SCRIPT),
/// which is right however often a batch is sent.
#[derive(Debug)]
pub struct CommitPipeline {
    /// The commit guard ([`guard_key`](super::guard_key)); `None` for two-server commits,
    /// which are never watched.
    guard: Option<String>,
    /// The guard may be set on the server: it is deleted before the next watched batch.
    guarded: bool,
    in_flight: VecDeque<Sent>,
    /// Batches the guard refused, while those behind them are read (before them in order).
    refused: Vec<Sent>,
    /// Batches answered and not yet taken (several after a refusal).
    ready: VecDeque<Committed>,
}

impl CommitPipeline {
    /// A pipeline whose watched batches use the commit guard `guard` (`None`: never watch).
    /// A guard left set by an earlier process is deleted before the first watched batch.
    pub fn new(guard: Option<String>) -> CommitPipeline {
        CommitPipeline {
            guarded: guard.is_some(),
            guard,
            in_flight: VecDeque::new(),
            refused: Vec::new(),
            ready: VecDeque::new(),
        }
    }

    /// Batches sent and not yet taken with [`receive`](Self::receive).
    pub fn len(&self) -> usize {
        self.ready.len()
            + self.refused.len()
            + self
                .in_flight
                .iter()
                .filter(|s| s.form != Form::Unguard)
                .count()
    }

    /// Whether no batch is waiting for its reply.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends `batch`: watched when it can go that way, else as the script. On an error the
    /// batch stays in flight (a reconnect sends it again with [`resend`](Self::resend)).
    pub fn send(
        &mut self,
        conn: &mut BlockingConn,
        batch: EncodedBatch,
    ) -> Result<(), StreamConnError> {
        let watch = batch.watched.is_some() && self.guard.is_some();
        if watch && self.guarded {
            self.send_unguard(conn)?;
        }
        let form = if watch { Form::Watched } else { Form::Eval };
        self.in_flight.push_back(Sent {
            batch: Some(batch),
            sent_at: Instant::now(),
            form,
            read: 0,
            guard: None,
            queue_error: None,
        });
        let sent = self.in_flight.back().expect("just pushed");
        conn.send(bytes_of(sent))
    }

    fn send_unguard(&mut self, conn: &mut BlockingConn) -> Result<(), StreamConnError> {
        let guard = self.guard.as_deref().expect("watched batches have a guard");
        let mut del = Vec::with_capacity(guard.len() + 32);
        encode_command(&mut del, &[b"DEL", guard.as_bytes()]);
        self.guarded = false;
        self.in_flight.push_back(Sent {
            batch: None,
            sent_at: Instant::now(),
            form: Form::Unguard,
            read: 0,
            guard: None,
            queue_error: None,
        });
        conn.send(&del)
    }

    /// The oldest batch's result, waiting for it. An error that
    /// [`is_connection`](StreamConnError::is_connection) leaves the batches in flight for
    /// [`resend`](Self::resend); any other means the pipeline cannot go on.
    pub fn receive(&mut self, conn: &mut BlockingConn) -> Result<Committed, StreamConnError> {
        loop {
            if let Some(done) = self.ready.pop_front() {
                return Ok(done);
            }
            self.step(conn, true)?;
        }
    }

    /// The oldest batch's result if its replies have all arrived; never waits.
    pub fn try_receive(
        &mut self,
        conn: &mut BlockingConn,
    ) -> Result<Option<Committed>, StreamConnError> {
        loop {
            if let Some(done) = self.ready.pop_front() {
                return Ok(Some(done));
            }
            if self.in_flight.is_empty() || !self.step(conn, false)? {
                return Ok(None);
            }
        }
    }

    /// Reads replies of the oldest request until it is answered (or, without `wait`, until
    /// none is there: `false`), and handles its outcome.
    fn step(&mut self, conn: &mut BlockingConn, wait: bool) -> Result<bool, StreamConnError> {
        let Some(outcome) = self.read_front(conn, wait)? else {
            return Ok(false);
        };
        self.settle(outcome);
        if !self.refused.is_empty() {
            self.after_refusal(conn)?;
        }
        Ok(true)
    }

    /// Takes the oldest request, answered: a committed batch is ready, a refused one waits.
    fn settle(&mut self, outcome: Outcome) {
        let sent = self.in_flight.pop_front().expect("answered");
        match outcome {
            Outcome::Committed(counts) => self.ready.push_back(Committed {
                batch: sent.batch.expect("a batch"),
                sent_at: sent.sent_at,
                counts,
            }),
            Outcome::Refused => self.refused.push(sent),
            Outcome::Unguarded => {}
        }
    }

    /// A watched batch was refused, so the guard is set: every watched batch behind it is
    /// refused too. They are all read, then sent again as the script in their order, and the
    /// guard is deleted; batches sent after go behind them, so the order holds.
    fn after_refusal(&mut self, conn: &mut BlockingConn) -> Result<(), StreamConnError> {
        while !self.in_flight.is_empty() {
            let outcome = self.read_front(conn, true)?.expect("waited");
            self.settle(outcome);
        }
        self.guarded = true;
        for sent in std::mem::take(&mut self.refused) {
            self.requeue(sent);
        }
        self.send_all(conn)
    }

    /// After a reconnect: sends every batch in flight again, in order, as the script (a
    /// watched batch may or may not have been carried out), then deletes the guard.
    pub fn resend(&mut self, conn: &mut BlockingConn) -> Result<(), StreamConnError> {
        let refused = std::mem::take(&mut self.refused);
        let in_flight = std::mem::take(&mut self.in_flight);
        for sent in refused.into_iter().chain(in_flight) {
            if sent.batch.is_some() {
                self.requeue(sent);
            }
        }
        self.guarded = self.guard.is_some();
        self.send_all(conn)
    }

    fn requeue(&mut self, sent: Sent) {
        self.in_flight.push_back(Sent {
            form: Form::Eval,
            read: 0,
            guard: None,
            queue_error: None,
            ..sent
        });
    }

    /// Sends everything in flight (all as the script), then the guard's deletion.
    fn send_all(&mut self, conn: &mut BlockingConn) -> Result<(), StreamConnError> {
        for sent in &self.in_flight {
            conn.send(bytes_of(sent))?;
        }
        if self.guarded {
            self.send_unguard(conn)?;
        }
        Ok(())
    }

    /// Drops every batch in flight (the pipeline cannot go on).
    pub fn clear(&mut self) {
        self.in_flight.clear();
        self.refused.clear();
        self.ready.clear();
    }

    /// Reads the oldest request's replies; its outcome once all are in.
    fn read_front(
        &mut self,
        conn: &mut BlockingConn,
        wait: bool,
    ) -> Result<Option<Outcome>, StreamConnError> {
        let addr = conn.addr();
        loop {
            let sent = self.in_flight.front_mut().expect("a request in flight");
            let form = sent.form;
            let expected = match (form, &sent.batch) {
                (Form::Watched, Some(b)) => b.watched.as_ref().expect("watched").replies(),
                _ => 1,
            };
            let last = sent.read + 1 == expected;
            let reply = match form {
                Form::Eval => read(conn, wait, |f| commit_counts(f, addr).map(Piece::Counts)),
                Form::Unguard => read(conn, wait, |_| Ok(Piece::Done)),
                Form::Watched if last => {
                    let w = sent.batch.as_ref().and_then(|b| b.watched.as_ref());
                    let w = w.expect("watched");
                    read(conn, wait, |f| exec_reply(f, w, addr))
                }
                Form::Watched => read(conn, wait, |f| Ok(Piece::of(f))),
            };
            let piece = match reply {
                Ok(Some(piece)) => piece,
                Ok(None) => return Ok(None),
                Err(e) => return Err(e),
            };
            let sent = self.in_flight.front_mut().expect("a request in flight");
            let index = sent.read;
            sent.read += 1;
            match (form, piece) {
                (Form::Eval, Piece::Counts(c)) => return Ok(Some(Outcome::Committed(c))),
                (Form::Eval, Piece::Error(message)) => {
                    return Err(StreamConnError::Server { addr, message })
                }
                (Form::Unguard, Piece::Error(message)) => {
                    return Err(StreamConnError::Server { addr, message })
                }
                (Form::Unguard, _) => return Ok(Some(Outcome::Unguarded)),
                (Form::Watched, piece) => {
                    if let Some(outcome) = watched_piece(sent, index, last, piece, addr)? {
                        return Ok(Some(outcome));
                    }
                }
                (Form::Eval, _) => {
                    return Err(StreamConnError::protocol(addr, "the commit script's reply"))
                }
            }
        }
    }
}

/// One reply, as far as the pipeline cares.
enum Piece {
    /// `+OK`, `+QUEUED` and the like.
    Done,
    Integer(i64),
    Error(String),
    /// The script's counts.
    Counts(CommitCounts),
    /// `EXEC` aborted (nil).
    Aborted,
    /// `EXEC`'s replies: the `XACK`s' sum.
    Executed {
        acknowledged: u64,
    },
}

impl Piece {
    fn of(frame: Frame<'_>) -> Piece {
        match frame {
            Frame::Integer(n) => Piece::Integer(n),
            _ => Piece::Done,
        }
    }
}

/// Reads one reply (waiting, or only if it is there); a server's error reply becomes
/// [`Piece::Error`] unless it is one to reconnect on.
fn read(
    conn: &mut BlockingConn,
    wait: bool,
    f: impl FnOnce(Frame<'_>) -> Result<Piece, StreamConnError>,
) -> Result<Option<Piece>, StreamConnError> {
    let reply = if wait {
        conn.reply(f).map(Some)
    } else {
        conn.try_reply(f)
    };
    match reply {
        Err(e) if !e.is_connection() => match e {
            StreamConnError::Server { message, .. } => Ok(Some(Piece::Error(message))),
            e => Err(e),
        },
        other => other,
    }
}

/// `EXEC`'s reply to a watched batch: nil when aborted, else the `XACK`s' counts then the
/// `XADD`s' ids. An `XADD` that failed inside (its key changed type since the guard looked)
/// leaves an entry acknowledged without its output: an error that says so.
fn exec_reply(frame: Frame<'_>, w: &Watched, addr: SocketAddr) -> Result<Piece, StreamConnError> {
    let items = match frame {
        Frame::Nil | Frame::NilArray => return Ok(Piece::Aborted),
        Frame::Array(items) => items,
        _ => return Err(StreamConnError::protocol(addr, "EXEC's reply")),
    };
    let mut acknowledged = 0u64;
    let mut failed = 0usize;
    let mut first_failure = String::new();
    for (i, item) in items.iter().enumerate() {
        match item {
            Frame::Integer(n) if i < w.acks => acknowledged += n.max(0) as u64,
            Frame::Bulk(_) if i >= w.acks => {}
            Frame::Error(m) => {
                failed += 1;
                if first_failure.is_empty() {
                    first_failure = String::from_utf8_lossy(m).into_owned();
                }
            }
            _ => return Err(StreamConnError::protocol(addr, "EXEC's replies")),
        }
    }
    if items.len() != w.acks + w.adds {
        return Err(StreamConnError::protocol(addr, "EXEC's reply count"));
    }
    if failed > 0 {
        return Err(StreamConnError::Server {
            addr,
            message: format!(
                "{failed} of a batch's {} commands failed inside its transaction, after the guard's checks ({first_failure}); their entries may be acknowledged without their outputs",
                w.acks + w.adds
            ),
        });
    }
    Ok(Piece::Executed { acknowledged })
}

/// Applies reply `index` of a watched batch (`last`: `EXEC`'s); its outcome after the last.
fn watched_piece(
    sent: &mut Sent,
    index: usize,
    last: bool,
    piece: Piece,
    addr: SocketAddr,
) -> Result<Option<Outcome>, StreamConnError> {
    match (index, piece) {
        (1, Piece::Integer(n)) => sent.guard = Some(Ok(n == 1)),
        (1, Piece::Error(m)) => sent.guard = Some(Err(m)),
        (_, Piece::Error(m)) if index == 0 || index == 2 => {
            return Err(StreamConnError::Server { addr, message: m })
        }
        // EXECABORT: a command was refused when queued; nothing was done.
        (_, Piece::Error(m)) if last => {
            let message = match (sent.guard.take(), sent.queue_error.take()) {
                (Some(Err(guard)), _) => guard,
                (_, Some(queued)) => queued,
                _ => m,
            };
            return Err(StreamConnError::Server { addr, message });
        }
        (_, Piece::Error(m)) => {
            sent.queue_error.get_or_insert(m);
        }
        (_, Piece::Aborted) => {
            return match (sent.guard.take(), sent.queue_error.take()) {
                (Some(Err(message)), _) => Err(StreamConnError::Server { addr, message }),
                (_, Some(message)) => Err(StreamConnError::Server { addr, message }),
                _ => Ok(Some(Outcome::Refused)),
            };
        }
        (_, Piece::Executed { acknowledged }) => {
            let w = sent.batch.as_ref().and_then(|b| b.watched.as_ref());
            let records = w.expect("watched").records as u64;
            // The guard passed, so the entries were this consumer's and pending: an XACK that
            // counts short means a client outside the protocol took some (see SCRIPT). If the
            // guard script did not run at all (an error reply, yet the transaction went on),
            // nothing was checked: every entry counts as unverified.
            let unverified = match sent.guard {
                Some(Ok(true)) => records.saturating_sub(acknowledged),
                _ => records,
            };
            return Ok(Some(Outcome::Committed(CommitCounts {
                committed: records,
                duplicates: 0,
                unverified,
            })));
        }
        (_, Piece::Done | Piece::Integer(_)) => {}
        (_, Piece::Counts(_)) => return Err(StreamConnError::protocol(addr, "a watched reply")),
    }
    Ok(None)
}

fn bytes_of(sent: &Sent) -> &[u8] {
    let batch = sent.batch.as_ref().expect("a batch");
    match sent.form {
        Form::Watched => &batch.watched.as_ref().expect("watched").commands,
        _ => &batch.eval,
    }
}
