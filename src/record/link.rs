//! A session's link to the recorder, as the data path holds it: events sent
//! in order through the recorder's bounded channel (`events`).
//!
//! A send that finds the channel full queues the event here, in order; the
//! session then waits for room before it reads more (statements and
//! decisions are never dropped). Rows of `full` results are the exception:
//! when the channel is full they are dropped and counted (the protocol's
//! capture says which bytes are rows), and the recorder writes a `gap`
//! record.

use super::events::Ev;
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

/// One session's link to the recorder.
pub struct SessionRec {
    tx: mpsc::Sender<Ev>,
    health: Arc<Health>,
    pub session: u32,
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
        session: u32,
        mode: ResultsMode,
        max_rows: u64,
        max_bytes: u64,
        strip_rows: StripRows,
    ) -> Self {
        SessionRec {
            tx,
            health,
            session,
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
