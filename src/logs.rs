//! The log's writer thread: a worker formats a line and hands it over; it
//! never waits on the log's file or pipe (a slow journal or a full disk
//! does not stall the data path, and a storm of sessions does not pay a
//! write system call per line). The thread writes what is queued in one
//! go. When the queue is full a line is dropped and counted, and the
//! writer says how many were dropped once it catches up.
//!
//! While lines keep coming the thread looks at its queue every [`POLL`]
//! instead of waiting on it: a line sent to a waiting receiver wakes it
//! (a futex call, and on a small host a worker preempted), and a storm of
//! short sessions logs several lines each. Each empty look doubles the
//! sleep before the next (up to [`MAX_POLL`]); after [`IDLE_BEFORE_WAITING`]
//! without a line it waits on the queue again. A line every few hundred
//! milliseconds costs a few looks each; an idle gateway's writer sleeps.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Lines queued at most. The queue's memory is taken as lines come and
/// given back as they are written (a channel whose slots were allocated
/// up front held 2 MiB resident for the life of the process).
pub const QUEUE_LINES: usize = 65_536;
/// The writer's sleep between looks at its queue while lines come.
pub const POLL: Duration = Duration::from_millis(5);
/// The longest sleep between two empty looks: the most a line waits
/// before the writer takes it.
pub const MAX_POLL: Duration = Duration::from_millis(20);
/// Time without a line after which the writer waits on its queue.
pub const IDLE_BEFORE_WAITING: Duration = Duration::from_millis(200);

enum Msg {
    Line(Vec<u8>),
    Stop,
}

/// Where tracing's formatter writes (see `tracing_subscriber::fmt::MakeWriter`).
#[derive(Clone)]
pub struct Sink {
    tx: Sender<Msg>,
    /// Lines sent and not yet taken by the writer; at most `limit`.
    queued: Arc<AtomicUsize>,
    limit: usize,
    dropped: Arc<AtomicU64>,
}

/// One event as one line of plain text: a line break inside it (a
/// client's startup `database` or `user`, an upstream's error text) is
/// written as `\n` or `\r`, and any other control character (a terminal
/// escape, a backspace) as `\xNN`, so nobody who can put text into a field
/// can forge log lines or rewrite what a terminal shows. Tabs stay.
fn one_line(event: &[u8]) -> Vec<u8> {
    let (body, end) = match event.strip_suffix(b"\n") {
        Some(body) => (body, &b"\n"[..]),
        None => (event, &b""[..]),
    };
    let control = |b: u8| (b < 0x20 && b != b'\t') || b == 0x7f;
    if !body.iter().any(|&b| control(b)) {
        return event.to_vec();
    }
    let mut out = Vec::with_capacity(event.len() + 8);
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b if control(b) => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out.extend_from_slice(end);
    out
}

impl Sink {
    fn send(&self, line: &[u8]) {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.tx.send(Msg::Line(one_line(line))).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One event's output.
pub struct LineWriter<'a> {
    sink: &'a Sink,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The formatter writes an event in one call.
        self.sink.send(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Sink {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { sink: self }
    }
}

/// The writer thread; dropping it writes what is queued and stops it.
pub struct Background {
    tx: Sender<Msg>,
    thread: Option<JoinHandle<()>>,
    /// Times the writer began waiting on its queue (it then needs a wake).
    waits: Arc<AtomicU64>,
}

impl Background {
    /// Times the writer began waiting on its queue.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // Queued behind every line sent before it.
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts a writer thread over `out`. `json`: the dropped-lines notice is a
/// JSON object like the other lines.
pub fn background<W: Write + Send + 'static>(out: W, json: bool, queue: usize) -> io::Result<(Sink, Background)> {
    background_with(out, json, queue, IDLE_BEFORE_WAITING)
}

/// [`background`] with the time without a line after which the writer
/// waits on its queue.
fn background_with<W: Write + Send + 'static>(
    out: W,
    json: bool,
    queue: usize,
    idle_before_waiting: Duration,
) -> io::Result<(Sink, Background)> {
    let (tx, rx) = channel();
    let dropped = Arc::new(AtomicU64::new(0));
    let d = dropped.clone();
    let queued = Arc::new(AtomicUsize::new(0));
    let q = queued.clone();
    let waits = Arc::new(AtomicU64::new(0));
    let w = waits.clone();
    let thread = std::thread::Builder::new()
        .name("gatehouse-log".into())
        .spawn(move || run(rx, out, &d, &q, json, &w, idle_before_waiting))?;
    Ok((
        Sink {
            tx: tx.clone(),
            queued,
            limit: queue.max(1),
            dropped,
        },
        Background {
            tx,
            thread: Some(thread),
            waits,
        },
    ))
}

fn run<W: Write>(
    rx: Receiver<Msg>,
    out: W,
    dropped: &AtomicU64,
    queued: &AtomicUsize,
    json: bool,
    waits: &AtomicU64,
    idle_before_waiting: Duration,
) {
    let mut out = io::BufWriter::with_capacity(64 << 10, out);
    let mut reported = 0;
    // Time since the last line, and the next sleep; waiting at start
    // (nothing may come for a long time).
    let mut idle = idle_before_waiting;
    let mut sleep = POLL;
    loop {
        let first = if idle >= idle_before_waiting {
            waits.fetch_add(1, Ordering::Relaxed);
            match rx.recv() {
                Ok(m) => m,
                Err(_) => return,
            }
        } else {
            match rx.try_recv() {
                Ok(m) => m,
                Err(TryRecvError::Empty) => {
                    std::thread::sleep(sleep);
                    idle += sleep;
                    sleep = (sleep * 2).min(MAX_POLL);
                    continue;
                }
                Err(TryRecvError::Disconnected) => return,
            }
        };
        idle = Duration::ZERO;
        sleep = POLL;
        let mut stop = false;
        let mut next = Some(first);
        while let Some(m) = next {
            match m {
                Msg::Line(l) => {
                    queued.fetch_sub(1, Ordering::AcqRel);
                    let _ = out.write_all(&l);
                }
                Msg::Stop => stop = true,
            }
            next = if stop { None } else { rx.try_recv().ok() };
        }
        let d = dropped.load(Ordering::Relaxed);
        if d != reported {
            let n = d - reported;
            reported = d;
            let _ = if json {
                writeln!(
                    out,
                    "{{\"level\":\"WARN\",\"target\":\"gatehouse::logs\",\"message\":\"log lines dropped: the log writer was behind\",\"dropped\":{n}}}"
                )
            } else {
                writeln!(
                    out,
                    "WARN gatehouse::logs: {n} log lines dropped: the log writer was behind"
                )
            };
        }
        let _ = out.flush();
        if stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A writer whose bytes the test can read, and that can be held shut.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_in_order_and_all_are_written_at_stop() {
        let out = Shared::default();
        let (sink, bg) = background(out.clone(), false, 1024).unwrap();
        for i in 0..500 {
            let mut w = tracing_subscriber::fmt::MakeWriter::make_writer(&sink);
            w.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        drop(bg);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let want: String = (0..500).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, want);
    }

    /// Waits (up to 10 s) until `cond` holds.
    fn eventually(cond: impl Fn() -> bool) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    #[test]
    fn lines_are_written_while_the_writer_polls_and_after_it_waits_again() {
        let out = Shared::default();
        // Two seconds without a line before it waits: the test's own steps
        // between two lines, on a busy host, stay well under that.
        let (sink, bg) = background_with(out.clone(), false, 1024, Duration::from_secs(2)).unwrap();
        let has = |want: &str| String::from_utf8_lossy(&out.0.lock().unwrap()).contains(want);
        let mut w = tracing_subscriber::fmt::MakeWriter::make_writer(&sink);
        // At start the writer waits on its queue: the first line wakes it.
        assert!(eventually(|| bg.waits() == 1), "the writer does not wait at start");
        w.write_all(b"first\n").unwrap();
        assert!(eventually(|| has("first\n")), "the first line was not written");
        // Lines that follow are taken by its looks; having written them, it
        // keeps looking for a while instead of waiting at once.
        for i in 0..20 {
            w.write_all(format!("close {i}\n").as_bytes()).unwrap();
        }
        assert!(
            eventually(|| has("close 19\n")),
            "lines sent while the writer polls were not written"
        );
        assert_eq!(
            bg.waits(),
            1,
            "the writer went back to waiting as soon as its queue was empty"
        );
        // Without lines it goes back to waiting, and a line wakes it again.
        assert!(
            eventually(|| bg.waits() == 2),
            "the idle writer did not go back to waiting"
        );
        w.write_all(b"last\n").unwrap();
        assert!(
            eventually(|| has("last\n")),
            "a line sent to the waiting writer was not written"
        );
        drop(bg);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let want: String = std::iter::once("first\n".to_string())
            .chain((0..20).map(|i| format!("close {i}\n")))
            .chain(std::iter::once("last\n".to_string()))
            .collect();
        assert_eq!(text, want);
    }

    #[test]
    fn an_event_stays_one_line() {
        assert_eq!(one_line(b"plain\n"), b"plain\n");
        assert_eq!(
            one_line(b"refused database=\"x\nFAKE session open\r\"\n"),
            b"refused database=\"x\\nFAKE session open\\r\"\n"
        );
        assert_eq!(one_line(b"no end\nhere"), b"no end\\nhere");
        assert_eq!(
            one_line(b"user=\"\x1b[2J\x1b[1;1Hok\x08\x7f\"\tx\n"),
            b"user=\"\\x1b[2J\\x1b[1;1Hok\\x08\\x7f\"\tx\n"
        );
        let out = Shared::default();
        let (sink, bg) = background(out.clone(), false, 16).unwrap();
        let mut w = tracing_subscriber::fmt::MakeWriter::make_writer(&sink);
        w.write_all(b"a\nb\n").unwrap();
        drop(bg);
        assert_eq!(out.0.lock().unwrap().as_slice(), b"a\\nb\n");
    }

    #[test]
    fn the_queue_holds_its_limit_and_room_comes_back_as_lines_are_taken() {
        let (tx, rx) = channel();
        let sink = Sink {
            tx,
            queued: Arc::new(AtomicUsize::new(0)),
            limit: 4,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        for i in 0..10 {
            sink.send(format!("{i}\n").as_bytes());
        }
        assert_eq!(sink.queued.load(Ordering::Relaxed), 4);
        assert_eq!(sink.dropped.load(Ordering::Relaxed), 6);
        let taken: Vec<Vec<u8>> = rx
            .try_iter()
            .map(|m| match m {
                Msg::Line(l) => l,
                Msg::Stop => panic!("no stop was sent"),
            })
            .collect();
        assert_eq!(taken, [b"0\n", b"1\n", b"2\n", b"3\n"], "the first four, in order");
        // The writer gives room back for each line it takes.
        sink.queued.fetch_sub(4, Ordering::AcqRel);
        sink.send(b"again\n");
        assert_eq!(sink.dropped.load(Ordering::Relaxed), 6);
        assert!(matches!(rx.try_recv(), Ok(Msg::Line(l)) if l == b"again\n"));
        // A writer gone: the line is counted as dropped, and its room kept free.
        drop(rx);
        sink.send(b"lost\n");
        assert_eq!(sink.dropped.load(Ordering::Relaxed), 7);
        assert_eq!(sink.queued.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_full_queue_drops_and_says_how_many() {
        let out = Shared::default();
        // The writer is held up: it cannot take its first line's lock.
        let gate = out.0.lock().unwrap();
        let (sink, bg) = background(out.clone(), true, 4).unwrap();
        for i in 0..100 {
            sink.send(format!("{{\"n\":{i}}}\n").as_bytes());
        }
        drop(gate);
        // Caught up, the writer has given back the room of every line it
        // took: lines are queued again, as many as fit.
        assert!(
            eventually(|| sink.queued.load(Ordering::Acquire) == 0),
            "the writer did not give the queue's room back"
        );
        for i in 100..104 {
            sink.send(format!("{{\"n\":{i}}}\n").as_bytes());
        }
        drop(bg);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let kept = lines.iter().filter(|l| l.starts_with("{\"n\":")).count();
        let dropped: usize = lines
            .iter()
            .filter(|l| l.contains("log lines dropped"))
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["dropped"]
                    .as_u64()
                    .unwrap() as usize
            })
            .sum();
        assert!(
            dropped > 0 && kept + dropped == 104,
            "{kept} kept, {dropped} dropped: {text}"
        );
        for i in 100..104 {
            assert!(
                text.contains(&format!("{{\"n\":{i}}}\n")),
                "line {i} after the catch-up is missing: {text}"
            );
        }
        assert!(lines
            .iter()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
    }
}
