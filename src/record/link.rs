//! A session's link to the recorder, as the data path holds it: events sent
//! in order through the recorder's bounded channel (`events`).
//!
//! A send that finds the channel full queues the event here, in order; the
//! session then waits for room before it reads more (statements and
//! decisions are never dropped). Rows of `full` results are the exception:
//! when the channel is full they are dropped and counted (the protocol's
//! capture says which bytes are rows), and the recorder writes a `gap`
//! record.

use super::events::{Ev, RecordingKey};
use crate::config::ResultsMode;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc::{self, error::TrySendError};

/// Whether recordings can be written, as the recorder last found, and
/// whether the data path must then refuse (`recording.on_failure`).
#[derive(Debug, Default)]
pub struct Health {
    failing: AtomicBool,
    refuse: bool,
}

/// What a client is told while recordings cannot be written.
pub const REFUSED_MESSAGE: &str =
    "gatehouse cannot write session recordings (see its log): refused until it can (recording.on_failure = \"refuse\")";

impl Health {
    pub fn new(refuse: bool) -> Health {
        Health {
            failing: AtomicBool::new(false),
            refuse,
        }
    }

    /// Marks a failure; true when this starts one.
    pub fn fail(&self) -> bool {
        !self.failing.swap(true, Ordering::AcqRel)
    }

    /// Marks writing as working again; true when this ends a failure.
    pub fn recover(&self) -> bool {
        self.failing.swap(false, Ordering::AcqRel)
    }

    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    /// New sessions and statements are refused now.
    pub fn refusing(&self) -> bool {
        self.refuse && self.failing()
    }
}

/// Where sessions send their events. The recorder's writer threads (in the
/// control plane) implement it; the data path knows only this.
pub trait Sink: Send + Sync {
    /// The channel of a session's writer.
    fn sender(&self, session: u32) -> mpsc::Sender<Ev>;
    /// Whether recordings are being written.
    fn health(&self) -> Arc<Health>;
    /// Writes what is queued, seals the sessions still open and stops (at
    /// shutdown, after the drain).
    fn finish(&self);
}

/// Takes the rows out of a server event's frames: (frames kept, rows,
/// bytes of rows). Each protocol's capture knows its own framing.
pub type StripRows = fn(&[u8]) -> (Vec<u8>, u64, u64);

/// How often a session waiting on a full recorder channel looks again.
const FULL_POLL: std::time::Duration = std::time::Duration::from_millis(1);

/// Bytes of ended sessions' events (as [`weight`] counts them) a worker
/// holds at most, waiting for room in the recorder's channels: an idle
/// session's opening and close are about 700.
const BACKLOG_MAX_BYTES: usize = 32 << 20;

/// What an event holds in memory, near enough to bound a backlog by: its
/// own size and its frames, the one part that can be large (a statement
/// or a result of up to `max_message_bytes`).
fn weight(ev: &Ev) -> usize {
    let held = match ev {
        Ev::Open { .. } => std::mem::size_of::<super::events::OpenInfo>() + 256,
        Ev::Client { frames, statements, .. } => {
            frames.len() + statements.len() * std::mem::size_of::<super::StatementRef>()
        }
        Ev::Server { frames, masked, .. } => frames.len() + masked.len() * 64,
        Ev::Review { .. } | Ev::Audit { .. } => 512,
        Ev::Close { .. } | Ev::Stop => 0,
    };
    std::mem::size_of::<(mpsc::Sender<Ev>, Ev)>() + held
}

/// Events of ended sessions not yet in the recorder's channel, on every
/// worker: the shutdown's drain waits for them as for sessions.
static BACKLOGGED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Events handed over by ended sessions and not yet sent, on all workers.
pub fn backlogged() -> usize {
    BACKLOGGED.load(Ordering::Acquire)
}

/// A worker's events of ended sessions, in the order each session sent
/// them, with the channel each goes to.
#[derive(Default)]
struct Backlog {
    events: VecDeque<(mpsc::Sender<Ev>, Ev)>,
    /// Their [`weight`].
    bytes: usize,
    /// A task is sending them.
    draining: bool,
}

thread_local! {
    static BACKLOG: RefCell<Backlog> = RefCell::new(Backlog::default());
}

/// Sends the worker's backlog in order, waiting (polling, as
/// [`SessionRec::flush`] does) whenever a channel is full; ends when the
/// backlog is empty.
async fn drain_backlog() {
    loop {
        let full = BACKLOG.with(|b| {
            let mut b = b.borrow_mut();
            while let Some((tx, ev)) = b.events.pop_front() {
                let w = weight(&ev);
                match tx.try_send(ev) {
                    Ok(()) => {}
                    Err(TrySendError::Full(ev)) => {
                        b.events.push_front((tx, ev));
                        return true;
                    }
                    // The recorder stopped: nothing more to record.
                    Err(TrySendError::Closed(_)) => {}
                }
                BACKLOGGED.fetch_sub(1, Ordering::AcqRel);
                b.bytes = b.bytes.saturating_sub(w);
            }
            debug_assert_eq!(b.bytes, 0, "the backlog's bytes follow its events");
            b.bytes = 0;
            b.draining = false;
            b.events = VecDeque::new();
            false
        });
        if !full {
            return;
        }
        monoio::time::sleep(FULL_POLL).await;
    }
}

/// The next recording key: counted from 1, never reused (at a million
/// sessions a second, 2^64 is half a million years away).
fn next_key() -> RecordingKey {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One session's link to the recorder.
pub struct SessionRec {
    tx: mpsc::Sender<Ev>,
    health: Arc<Health>,
    /// This recording's key in every event it sends: unique in the
    /// process, unlike a session's id, which can come back while the last
    /// events of an earlier session with it are still on their way (a
    /// server's backend pid, taken as the id, repeats across targets).
    pub key: RecordingKey,
    pub mode: ResultsMode,
    pub max_rows: u64,
    pub max_bytes: u64,
    strip_rows: StripRows,
    /// Events that found the channel full, oldest first.
    queue: RefCell<VecDeque<Ev>>,
    /// Rows and bytes of rows captured for the current result.
    pub rows: Cell<u64>,
    pub bytes: Cell<u64>,
    /// Rows not recorded since the last server event that went out.
    pub gap_rows: Cell<u64>,
    pub gap_bytes: Cell<u64>,
    /// Values masked in the current server batch, by rule index.
    pub masked: RefCell<Vec<(u32, u64)>>,
}

impl SessionRec {
    pub fn new(
        tx: mpsc::Sender<Ev>,
        health: Arc<Health>,
        mode: ResultsMode,
        max_rows: u64,
        max_bytes: u64,
        strip_rows: StripRows,
    ) -> Self {
        SessionRec {
            tx,
            health,
            key: next_key(),
            mode,
            max_rows,
            max_bytes,
            strip_rows,
            queue: RefCell::new(VecDeque::new()),
            rows: Cell::new(0),
            bytes: Cell::new(0),
            gap_rows: Cell::new(0),
            gap_bytes: Cell::new(0),
            masked: RefCell::new(Vec::new()),
        }
    }

    /// Sends now if there is room and nothing is queued; queues otherwise.
    pub fn push(&self, ev: Ev) {
        let mut q = self.queue.borrow_mut();
        if !q.is_empty() {
            // Behind a full channel: rows go, the rest waits its turn.
            q.push_back(self.without_rows(ev));
            return;
        }
        match self.tx.try_send(ev) {
            Ok(()) => {}
            Err(TrySendError::Full(ev)) => q.push_back(self.without_rows(ev)),
            // The recorder stopped (shutdown): nothing more to record.
            Err(TrySendError::Closed(_)) => {}
        }
    }

    /// Statements are refused: recordings cannot be written.
    pub fn refusing(&self) -> bool {
        self.health.refusing()
    }

    pub fn pending(&self) -> bool {
        !self.queue.borrow().is_empty()
    }

    /// Waits until every queued event is in the channel. It polls (every
    /// millisecond) rather than awaiting the channel: the writer's thread
    /// must never wake a worker's task (workers' wakers stay on their
    /// thread), and a full channel is the rare case.
    pub async fn flush(&self) {
        loop {
            let Some(ev) = self.queue.borrow_mut().pop_front() else {
                return;
            };
            match self.tx.try_send(ev) {
                Ok(()) => {}
                Err(TrySendError::Full(ev)) => {
                    self.queue.borrow_mut().push_front(ev);
                    monoio::time::sleep(FULL_POLL).await;
                }
                Err(TrySendError::Closed(_)) => {
                    self.queue.borrow_mut().clear();
                    return;
                }
            }
        }
    }

    /// At the session's end, after its last event: what is still queued
    /// (the channel was full) goes to this worker's backlog, sent in order
    /// by one task, and the session's own task can end now instead of
    /// waiting. Thousands of sessions ending together (clients leaving at
    /// once, each recorded at its end) otherwise each held their task,
    /// socket and a timer until there was room. A backlog over
    /// [`BACKLOG_MAX_BYTES`] is not added to: the session waits, as a live
    /// one does, so that memory stays bounded when the recorder falls
    /// behind for long.
    pub async fn end(&self) {
        if self.queue.borrow().is_empty() {
            return;
        }
        let handed = BACKLOG.with(|b| {
            let mut b = b.borrow_mut();
            let mut queue = self.queue.borrow_mut();
            let bytes: usize = queue.iter().map(weight).sum();
            if b.bytes + bytes > BACKLOG_MAX_BYTES {
                return false;
            }
            b.bytes += bytes;
            BACKLOGGED.fetch_add(queue.len(), Ordering::AcqRel);
            b.events.extend(queue.drain(..).map(|ev| (self.tx.clone(), ev)));
            if !b.draining {
                b.draining = true;
                monoio::spawn(drain_backlog());
            }
            true
        });
        if !handed {
            self.flush().await;
        }
    }

    pub fn count_masked(&self, rule: u32) {
        let mut m = self.masked.borrow_mut();
        match m.iter_mut().find(|(r, _)| *r == rule) {
            Some((_, n)) => *n += 1,
            None => m.push((rule, 1)),
        }
    }

    /// A server event with its rows taken out (counted as a gap), for a
    /// channel with no room: result bodies may be dropped, nothing else.
    fn without_rows(&self, ev: Ev) -> Ev {
        match ev {
            Ev::Server {
                session,
                t,
                frames,
                masked,
                gap_rows,
                gap_bytes,
            } if self.mode == ResultsMode::Full => {
                let (kept, rows, bytes) = (self.strip_rows)(&frames);
                Ev::Server {
                    session,
                    t,
                    frames: kept,
                    masked,
                    gap_rows: gap_rows + rows,
                    gap_bytes: gap_bytes + bytes,
                }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(session: RecordingKey, t: u64) -> Ev {
        Ev::Close {
            session,
            t,
            end: "client-disconnect",
            bytes_in: 0,
            bytes_out: 0,
            statements: 0,
            rows: 0,
            masked: 0,
        }
    }

    fn link(tx: mpsc::Sender<Ev>) -> SessionRec {
        SessionRec::new(tx, Arc::new(Health::default()), ResultsMode::Summary, 0, 0, |f| {
            (f.to_vec(), 0, 0)
        })
    }

    fn runtime() -> monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>> {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
    }

    fn worker_backlog() -> usize {
        BACKLOG.with(|b| b.borrow().events.len())
    }

    /// (session, t) of what the recorder received.
    fn received(rx: &mut mpsc::Receiver<Ev>) -> Vec<(RecordingKey, u64)> {
        let mut got = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            match ev {
                Ev::Close { session, t, .. } => got.push((session, t)),
                _ => panic!("only closes were sent"),
            }
        }
        got
    }

    #[test]
    fn ended_sessions_hand_their_queue_over_and_every_event_arrives_in_order() {
        let (tx, mut rx) = mpsc::channel(2);
        runtime().block_on(async move {
            let sessions: Vec<SessionRec> = (1..=3).map(|_| link(tx.clone())).collect();
            // Six events into a channel with room for two: four wait.
            for t in 0..2 {
                for s in &sessions {
                    s.push(close(s.key, t));
                }
            }
            assert!(sessions.iter().filter(|s| s.pending()).count() >= 2);
            // Ending does not wait for room: the queues go to the worker.
            for s in &sessions {
                let ended = monoio::time::timeout(std::time::Duration::from_millis(500), s.end()).await;
                assert!(ended.is_ok(), "ending waited for room in the channel");
                assert!(!s.pending());
            }
            assert_eq!(worker_backlog(), 4);
            assert!(backlogged() >= 4);
            // The recorder takes events as the drain hands them over.
            let mut got = Vec::new();
            for _ in 0..200 {
                got.extend(received(&mut rx));
                if got.len() == 6 {
                    break;
                }
                monoio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            assert_eq!(got.len(), 6, "nothing is lost: {got:?}");
            for s in &sessions {
                let ts: Vec<u64> = got.iter().filter(|(g, _)| *g == s.key).map(|(_, t)| *t).collect();
                assert_eq!(ts, vec![0, 1], "recording {}'s events in the order it sent them", s.key);
            }
            // The drain ends and lets its memory go.
            monoio::time::sleep(std::time::Duration::from_millis(5)).await;
            BACKLOG.with(|b| {
                let b = b.borrow();
                assert!(!b.draining);
                assert_eq!(b.events.capacity(), 0);
            });
        });
    }

    #[test]
    fn a_full_backlog_makes_the_ending_session_wait_as_a_live_one_does() {
        let (tx, mut rx) = mpsc::channel(1);
        runtime().block_on(async move {
            // The channel and the worker's backlog are full.
            tx.try_send(close(0, 0)).unwrap();
            let filled = BACKLOG.with(|b| {
                let mut b = b.borrow_mut();
                let mut t = 0;
                while b.bytes + weight(&close(0, 0)) <= BACKLOG_MAX_BYTES {
                    t += 1;
                    b.bytes += weight(&close(0, t));
                    b.events.push_back((tx.clone(), close(0, t)));
                }
                // No drain running: the test plays the recorder below.
                b.draining = true;
                b.events.len()
            });
            let s = link(tx.clone());
            s.push(close(s.key, 0));
            let key = s.key;
            assert!(s.pending());
            // The session ends: it may not add to the backlog, so it waits
            // until its own event is in the channel.
            let waiting = std::rc::Rc::new(std::cell::Cell::new(true));
            let w = waiting.clone();
            let ended = monoio::spawn(async move {
                s.end().await;
                w.set(false);
            });
            monoio::time::sleep(std::time::Duration::from_millis(10)).await;
            assert!(waiting.get(), "no room anywhere: the session waits");
            assert!(filled > 1000);
            assert_eq!(worker_backlog(), filled, "the backlog did not grow");
            // Room in the channel: the waiting session's event goes in.
            assert_eq!(received(&mut rx), vec![(0, 0)]);
            ended.await;
            assert!(!waiting.get());
            assert_eq!(received(&mut rx), vec![(key, 0)]);
            BACKLOG.with(|b| *b.borrow_mut() = Backlog::default());
        });
    }
}
