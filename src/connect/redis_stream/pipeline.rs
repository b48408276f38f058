//! [`CommitPipeline`]: commit batches sent on one connection to the output's server, their
//! replies read in order.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::commit::{commit_counts, CommitCounts, EncodedBatch, Watched};
use super::conn::{BlockingConn, StreamConnError};
use crate::resp::{encode_command, write_array_header, write_bulk, Frame, OwnedFrame};

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
    /// `SET` of the guard to a new token.
    Reset,
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

impl Sent {
    fn new(batch: Option<EncodedBatch>, form: Form, sent_at: Instant) -> Sent {
        Sent {
            batch,
            sent_at,
            form,
            read: 0,
            guard: None,
            queue_error: None,
        }
    }
}

/// What a request's replies came to.
enum Outcome {
    Committed(CommitCounts),
    /// The guard refused the watched batch, or its `WATCH` aborted it: nothing was done.
    Refused,
    Reset,
}

/// Commit batches in flight on one connection to the output's server, their replies read in
/// order.
///
/// A batch read fresh (input and output on one server) goes as a watched transaction of
/// plain commands (see [`GUARD_SCRIPT`](super::GUARD_SCRIPT)); any other batch goes as the
/// [`SCRIPT`](super::SCRIPT), which is right however often a batch is sent. The guard key
/// chains the watched batches: each expects the token its predecessor's transaction left,
/// so when one is refused (or its `EXEC` aborted), every watched batch behind it is refused
/// too. The pipeline then reads them all, sets the guard to a new token, and sends them
/// again as the script, in their order. A script batch is never sent behind a watched one
/// still in flight (the pipeline waits for those first), so the batches commit in the
/// order they were sent. After a lost connection, [`resend`](Self::resend) sets a new token
/// first, which aborts or refuses whatever the old connection still had on its way, then
/// sends everything again as the script.
#[derive(Debug)]
pub struct CommitPipeline {
    /// The commit guard ([`guard_key`](super::guard_key)); `None`: never watch (two-server
    /// commits, or a server that refuses the transaction's commands).
    guard: Option<String>,
    /// This pipeline's tokens: `NONCE-N`, unique among processes and pipelines.
    nonce: u64,
    issued: u64,
    /// The token the guard holds once every watched batch sent has committed.
    last_token: String,
    in_flight: VecDeque<Sent>,
    /// Batches refused, while those behind them are read (before them in order).
    refused: Vec<Sent>,
    /// Batches answered and not yet taken (several after a refusal).
    ready: VecDeque<Committed>,
}

impl CommitPipeline {
    /// A pipeline on `conn` whose watched batches use the commit guard `guard` (`None`:
    /// never watch). It sets the guard to its first token in a transaction of its own,
    /// which also tries the commands a watched batch needs: if the server refuses one
    /// (`NOPERM` from an ACL), every batch goes as the script
    /// ([`watching`](Self::watching) says so).
    pub fn open(
        conn: &mut BlockingConn,
        guard: Option<String>,
    ) -> Result<CommitPipeline, StreamConnError> {
        static PIPELINES: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let pipelines = PIPELINES.fetch_add(1, Ordering::Relaxed);
        let nonce = nanos.rotate_left(17) ^ (u64::from(std::process::id()) << 40) ^ pipelines;
        let mut p = CommitPipeline {
            guard,
            nonce,
            issued: 0,
            last_token: String::new(),
            in_flight: VecDeque::new(),
            refused: Vec::new(),
            ready: VecDeque::new(),
        };
        if let Some(guard) = p.guard.clone() {
            let token = p.next_token();
            match try_transaction(conn, &guard, &token)? {
                Some(true) => p.last_token = token,
                Some(false) => {} // the first watched batch is refused, and the guard reset
                None => p.guard = None,
            }
        }
        Ok(p)
    }

    /// Whether batches read fresh go as watched transactions.
    pub fn watching(&self) -> bool {
        self.guard.is_some()
    }

    fn next_token(&mut self) -> String {
        self.issued += 1;
        format!("{:016x}-{}", self.nonce, self.issued)
    }

    /// Batches sent and not yet taken with [`receive`](Self::receive).
    pub fn len(&self) -> usize {
        let in_flight = self.in_flight.iter().filter(|s| s.batch.is_some()).count();
        self.ready.len() + self.refused.len() + in_flight
    }

    /// Whether no batch is waiting for its reply.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends `batch`: watched when it can go that way, else as the script (after the
    /// watched batches in flight are answered). On an error the batch stays in flight (a
    /// reconnect sends it again with [`resend`](Self::resend)).
    pub fn send(
        &mut self,
        conn: &mut BlockingConn,
        batch: EncodedBatch,
    ) -> Result<(), StreamConnError> {
        let now = Instant::now();
        let Some(guard) = self.guard.clone().filter(|_| batch.watched.is_some()) else {
            let waited = self.wait_for_watched(conn);
            // Kept in flight even when the wait failed, unsent: a resend sends it.
            self.in_flight
                .push_back(Sent::new(Some(batch), Form::Eval, now));
            waited?;
            return conn.send(&batch_of(self.in_flight.back()).eval);
        };
        let next = self.next_token();
        let prev = std::mem::replace(&mut self.last_token, next.clone());
        self.in_flight
            .push_back(Sent::new(Some(batch), Form::Watched, now));
        let w = watched_of(self.in_flight.back());
        send_watched(conn, w, &guard, &prev, &next)
    }

    /// Reads replies until no watched batch is in flight.
    fn wait_for_watched(&mut self, conn: &mut BlockingConn) -> Result<(), StreamConnError> {
        while self.in_flight.iter().any(|s| s.form == Form::Watched) {
            self.step(conn, true)?;
        }
        Ok(())
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

    /// The oldest batch's result if its replies have all arrived; waits only after a
    /// refusal (for the batches behind it).
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
            Outcome::Reset => {}
        }
    }

    /// A watched batch was refused: every watched batch behind it is refused too (the
    /// chain is broken). They are all read; then the guard gets a new token and they go
    /// again as the script, in their order, ahead of anything sent later.
    fn after_refusal(&mut self, conn: &mut BlockingConn) -> Result<(), StreamConnError> {
        while !self.in_flight.is_empty() {
            let outcome = self.read_front(conn, true)?.expect("waited");
            self.settle(outcome);
        }
        let refused = std::mem::take(&mut self.refused);
        self.send_again(conn, refused)
    }

    /// After a reconnect: sets a new token and waits for the server to confirm it (so that
    /// whatever the old connection may still carry out is aborted or refused), then sends
    /// every batch in flight again, in order, as the script (a watched batch may or may not
    /// have been carried out).
    pub fn resend(&mut self, conn: &mut BlockingConn) -> Result<(), StreamConnError> {
        let refused = std::mem::take(&mut self.refused);
        let in_flight = std::mem::take(&mut self.in_flight);
        self.requeue(refused.into_iter().chain(in_flight));
        if let Some(set) = self.reset_command() {
            conn.send(&set)?;
            conn.reply(|_| Ok(()))?;
        }
        self.send_scripts(conn, 0)
    }

    /// After a refusal on this connection: a new token for the watched batches to come,
    /// then the refused ones as the script. All are in flight before anything is written.
    fn send_again(
        &mut self,
        conn: &mut BlockingConn,
        batches: Vec<Sent>,
    ) -> Result<(), StreamConnError> {
        let set = self.reset_command();
        if set.is_some() {
            self.in_flight
                .push_back(Sent::new(None, Form::Reset, Instant::now()));
        }
        let first = self.in_flight.len();
        self.requeue(batches);
        conn.send(set.as_deref().unwrap_or_default())?;
        self.send_scripts(conn, first)
    }

    /// Issues a new token: the `SET` that gives it to the guard (`None` without one).
    fn reset_command(&mut self) -> Option<Vec<u8>> {
        let guard = self.guard.clone()?;
        let token = self.next_token();
        let mut set = Vec::with_capacity(guard.len() + token.len() + 32);
        encode_command(&mut set, &[b"SET", guard.as_bytes(), token.as_bytes()]);
        self.last_token = token;
        Some(set)
    }

    /// Puts `batches` (a `Reset` has none) in flight again as the script, unsent.
    fn requeue(&mut self, batches: impl IntoIterator<Item = Sent>) {
        for sent in batches {
            if let Some(batch) = sent.batch {
                self.in_flight
                    .push_back(Sent::new(Some(batch), Form::Eval, sent.sent_at));
            }
        }
    }

    /// Writes the scripts of the requests in flight from position `first` on.
    fn send_scripts(&self, conn: &mut BlockingConn, first: usize) -> Result<(), StreamConnError> {
        for sent in self.in_flight.range(first..) {
            conn.send(&batch_of(Some(sent)).eval)?;
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
            let last = form != Form::Watched || sent.read + 1 == watched_of(Some(sent)).replies();
            let reply = match form {
                Form::Eval => read(conn, wait, false, |f| {
                    commit_counts(f, addr).map(Piece::Counts)
                }),
                Form::Reset => read(conn, wait, false, |_| Ok(Piece::Done)),
                Form::Watched if last => {
                    let w = watched_of(Some(sent));
                    read(conn, wait, true, |f| exec_reply(f, w, addr))
                }
                Form::Watched => read(conn, wait, true, |f| Ok(Piece::of(f))),
            };
            let Some(piece) = reply? else {
                return Ok(None);
            };
            let sent = self.in_flight.front_mut().expect("a request in flight");
            let index = sent.read;
            sent.read += 1;
            let outcome = match (form, piece) {
                (Form::Watched, piece) => watched_piece(sent, index, last, piece, addr)?,
                (_, Piece::Error(message)) => {
                    return Err(StreamConnError::Server { addr, message })
                }
                (Form::Eval, Piece::Counts(c)) => Some(Outcome::Committed(c)),
                (Form::Reset, _) => Some(Outcome::Reset),
                (Form::Eval, _) => {
                    return Err(StreamConnError::protocol(addr, "the commit script's reply"))
                }
            };
            if outcome.is_some() {
                return Ok(outcome);
            }
        }
    }
}

/// Sets the guard to `token` in a transaction (`WATCH`, `MULTI`, `SET`, `EXEC`), which
/// tries the commands a watched commit needs: `Some(whether the token was set)` (not when
/// another process touched the guard meanwhile), or `None` when the server refuses them
/// (`NOPERM`, an ACL). Any other error is returned.
fn try_transaction(
    conn: &mut BlockingConn,
    guard: &str,
    token: &str,
) -> Result<Option<bool>, StreamConnError> {
    let steps: [&[&[u8]]; 4] = [
        &[b"WATCH", guard.as_bytes()],
        &[b"MULTI"],
        &[b"SET", guard.as_bytes(), token.as_bytes()],
        &[b"EXEC"],
    ];
    for (i, step) in steps.iter().enumerate() {
        match conn.call(step) {
            Ok(OwnedFrame::NilArray | OwnedFrame::Nil) if i == 3 => return Ok(Some(false)),
            Ok(_) => {}
            Err(StreamConnError::Server { message, .. }) if message.contains("NOPERM") => {
                // Leave the connection as it was: no transaction open, nothing watched.
                let undo: &[u8] = if i >= 2 { b"DISCARD" } else { b"UNWATCH" };
                let _ = conn.call(&[undo]);
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Some(true))
}

/// Writes a watched batch: `WATCH`, the guard script expecting `prev`, `MULTI`, the body,
/// `SET guard next`, `EXEC`.
fn send_watched(
    conn: &mut BlockingConn,
    w: &Watched,
    guard: &str,
    prev: &str,
    next: &str,
) -> Result<(), StreamConnError> {
    let mut head = Vec::with_capacity(w.check.len() + 256);
    encode_command(&mut head, &[b"WATCH", w.fence.as_bytes(), guard.as_bytes()]);
    write_array_header(&mut head, 1 + w.check_args + 1);
    write_bulk(&mut head, b"EVAL");
    head.extend_from_slice(&w.check);
    write_bulk(&mut head, prev.as_bytes());
    encode_command(&mut head, &[b"MULTI"]);
    conn.send(&head)?;
    conn.send(&w.body)?;
    let mut tail = Vec::with_capacity(guard.len() + next.len() + 64);
    encode_command(&mut tail, &[b"SET", guard.as_bytes(), next.as_bytes()]);
    encode_command(&mut tail, &[b"EXEC"]);
    conn.send(&tail)
}

fn batch_of(sent: Option<&Sent>) -> &EncodedBatch {
    sent.and_then(|s| s.batch.as_ref()).expect("a batch")
}

fn watched_of(sent: Option<&Sent>) -> &Watched {
    batch_of(sent).watched.as_ref().expect("a watched batch")
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
/// [`Piece::Error`], unless it is one to reconnect on (`BUSY`, `LOADING`…) outside a
/// watched batch. Inside one, every reply is read, so that `EXEC`'s tells whether the
/// transaction ran.
fn read(
    conn: &mut BlockingConn,
    wait: bool,
    watched: bool,
    f: impl FnOnce(Frame<'_>) -> Result<Piece, StreamConnError>,
) -> Result<Option<Piece>, StreamConnError> {
    let reply = if wait {
        conn.reply(f).map(Some)
    } else {
        conn.try_reply(f)
    };
    match reply {
        Err(e @ StreamConnError::Server { .. }) if watched || !e.is_connection() => match e {
            StreamConnError::Server { message, .. } => Ok(Some(Piece::Error(message))),
            e => Err(e),
        },
        other => other,
    }
}

/// `EXEC`'s reply to a watched batch: nil when aborted, else the `XACK`s' counts, the
/// `XADD`s' ids and the guard `SET`'s `OK`. A command that failed inside (a key that changed
/// type since the guard looked) may leave entries acknowledged without their outputs: an
/// error that says so.
fn exec_reply(frame: Frame<'_>, w: &Watched, addr: SocketAddr) -> Result<Piece, StreamConnError> {
    let items = match frame {
        Frame::Nil | Frame::NilArray => return Ok(Piece::Aborted),
        Frame::Array(items) => items,
        _ => return Err(StreamConnError::protocol(addr, "EXEC's reply")),
    };
    if items.len() != w.acks + w.adds + 1 {
        return Err(StreamConnError::protocol(addr, "EXEC's reply count"));
    }
    let mut acknowledged = 0u64;
    let mut failed = 0usize;
    let mut first_failure = String::new();
    for (i, item) in items.iter().enumerate() {
        match item {
            Frame::Integer(n) if i < w.acks => acknowledged += n.max(0) as u64,
            Frame::Bulk(_) if i >= w.acks && i < w.acks + w.adds => {}
            Frame::Simple(_) if i == w.acks + w.adds => {}
            Frame::Error(m) => {
                failed += 1;
                if first_failure.is_empty() {
                    first_failure = String::from_utf8_lossy(m).into_owned();
                }
            }
            _ => return Err(StreamConnError::protocol(addr, "EXEC's replies")),
        }
    }
    if failed > 0 {
        return Err(StreamConnError::Server {
            addr,
            message: format!(
                "{failed} command(s) of a batch's transaction failed after the guard's checks ({first_failure}); its entries may be acknowledged without their outputs"
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
            let records = watched_of(Some(sent)).records as u64;
            return match sent.guard.take() {
                // The guard passed, so the entries were this consumer's and pending: an
                // XACK that counts short means a client outside the protocol took some
                // (see SCRIPT).
                Some(Ok(true)) => Ok(Some(Outcome::Committed(CommitCounts {
                    committed: records,
                    duplicates: 0,
                    unverified: records.saturating_sub(acknowledged),
                }))),
                // The guard failed without aborting the transaction (its refusal could not
                // be written, or it did not run): committed unchecked.
                guard => Err(StreamConnError::Server {
                    addr,
                    message: format!(
                        "the commit guard did not pass ({}), yet the batch's transaction ran: its {records} entries were committed unchecked, and may be duplicates",
                        match guard {
                            Some(Err(m)) => m,
                            _ => "no answer".to_string(),
                        }
                    ),
                }),
            };
        }
        (_, Piece::Done | Piece::Integer(_)) => {}
        (_, Piece::Counts(_)) => return Err(StreamConnError::protocol(addr, "a watched reply")),
    }
    Ok(None)
}
