//! Calls into actors, and what a caller may do when its actor stops before answering.
//!
//! An actor may stop with a call in its mailbox for two reasons, and they call for opposite
//! answers. A message still queued when the actor died was never applied: sending it to the
//! next incarnation is safe. A message whose handler panicked may be half applied (a lookup
//! counted, a rename half done): sending it again could apply it twice, so its caller gets
//! EIO. [`Reply`] tells the two apart: it notes when it is dropped unanswered by a panicking
//! thread, which only happens to the message in hand.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use tokio::sync::oneshot;

use super::{Refs, Registry};
use crate::error::{FsError, FsResult};

/// How long an actor call may wait for a reply before it fails (network waits use their own).
pub const ACTOR_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts of one actor call across restarts.
const ACTOR_CALL_ATTEMPTS: u32 = 4;

/// The port an actor answers a call on.
pub struct Reply<T> {
    port: Option<oneshot::Sender<T>>,
    /// Set when the port is dropped unanswered while its thread panics.
    abandoned: Arc<AtomicBool>,
}

impl<T> Reply<T> {
    /// A port and what its caller waits on.
    fn new() -> (Self, oneshot::Receiver<T>, Arc<AtomicBool>) {
        let (tx, rx) = oneshot::channel();
        let abandoned = Arc::new(AtomicBool::new(false));
        (Self { port: Some(tx), abandoned: abandoned.clone() }, rx, abandoned)
    }

    /// A port for a message sent without waiting for its answer.
    pub fn unwatched() -> Self {
        Self::new().0
    }

    /// Answers the call; `Err` gives the answer back when the caller has gone.
    pub fn send(mut self, value: T) -> Result<(), T> {
        self.port.take().expect("a reply is sent once").send(value)
    }
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        // Only the message in hand is dropped inside the handler; a panic also drops the
        // queued ones as it unwinds the actor's loop, after leaving the handler.
        if self.port.is_some() && std::thread::panicking() && HANDLING.get() {
            self.abandoned.store(true, Ordering::Relaxed);
        }
    }
}

thread_local! {
    /// Whether this thread is inside an actor's message handler.
    static HANDLING: Cell<bool> = const { Cell::new(false) };
}

/// Marks the thread as inside a message handler while it lives (the actor macros hold one
/// around `on_message`).
pub struct Handling(bool);

impl Handling {
    pub fn enter() -> Self {
        Self(HANDLING.replace(true))
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        HANDLING.set(self.0);
    }
}

/// A message enum called through [`call`]: which actor it goes to, for errors and metrics.
pub trait Request: ractor::Message {
    /// The actor's name in logs and metrics.
    const ACTOR: &'static str;
    /// Calls in flight to this actor (its mailbox depth as callers see it).
    fn in_flight() -> &'static AtomicU64;
}

/// Implements [`Request`] for a message enum.
macro_rules! request {
    ($msg:ty, $name:literal) => {
        impl $crate::actors::call::Request for $msg {
            const ACTOR: &'static str = $name;
            fn in_flight() -> &'static std::sync::atomic::AtomicU64 {
                static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                &N
            }
        }
    };
}
pub(crate) use request;

/// Counts a call in flight, recorded as `hf_mount.actor.mailbox`.
struct InFlight(&'static AtomicU64);

impl InFlight {
    fn enter<M: Request>() -> Self {
        let n = M::in_flight();
        let depth = n.fetch_add(1, Ordering::Relaxed) + 1;
        crate::metrics::get().mailbox.record(depth, &[crate::metrics::kv("actor", M::ACTOR)]);
        Self(n)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Calls an actor (picked from the registry each attempt), sending again while it restarts.
pub async fn call<M: Request, T: Send + 'static>(
    registry: &Registry,
    pick: impl Fn(&Refs) -> ActorRef<M>,
    build: impl Fn(Reply<T>) -> M,
) -> FsResult<T> {
    call_with_timeout(registry, pick, build, ACTOR_CALL_TIMEOUT).await
}

/// Like [`call`], for replies that wait on the network (bounded by `timeout`).
///
/// A message is sent again only when it was never applied: the send failed (the actor had
/// stopped), or it was still queued when the actor stopped. One whose handler panicked is
/// answered EIO. (So a handler answers every reply it is given: a message that needs no
/// answer has no reply port, and is sent with `send_message`.)
pub async fn call_with_timeout<M: Request, T: Send + 'static>(
    registry: &Registry,
    pick: impl Fn(&Refs) -> ActorRef<M>,
    build: impl Fn(Reply<T>) -> M,
    timeout: Duration,
) -> FsResult<T> {
    let _in_flight = InFlight::enter::<M>();
    for attempt in 0..ACTOR_CALL_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
        }
        let actor = pick(&registry.get()?);
        let (reply, rx, abandoned) = Reply::new();
        if actor.send_message(build(reply)).is_err() {
            continue; // stopped: the registry points at the next incarnation soon
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(v)) => return Ok(v),
            Err(_) => return Err(FsError::TimedOut(timeout, format!("{} reply", M::ACTOR))),
            Ok(Err(_)) if abandoned.load(Ordering::Relaxed) => {
                return Err(FsError::Io(format!("the {} failed while handling this request (not retried)", M::ACTOR)))
            }
            Ok(Err(_)) => {} // queued when the actor stopped: never applied
        }
    }
    Err(FsError::Io(format!("the {} is unavailable (restarting)", M::ACTOR)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_dropped_by_a_panic_is_abandoned_and_one_dropped_unread_is_not() {
        let (unread, _rx, flag) = Reply::<u32>::new();
        drop(unread);
        assert!(!flag.load(Ordering::Relaxed), "dropped unread (a dying mailbox)");

        let (in_hand, _rx, flag) = Reply::<u32>::new();
        let (queued, _rx2, queued_flag) = Reply::<u32>::new();
        let r = std::thread::spawn(move || {
            let _mailbox = queued; // dropped after the handler's frame, as ractor's ports are
            let _handling = Handling::enter();
            let _held = in_hand;
            panic!("handler fails mid-change");
        })
        .join();
        assert!(r.is_err());
        assert!(flag.load(Ordering::Relaxed), "dropped by the panicking handler");
        assert!(!queued_flag.load(Ordering::Relaxed), "dropped as the panic unwound the mailbox");

        let (answered, rx, flag) = Reply::<u32>::new();
        answered.send(7).unwrap();
        assert_eq!(rx.blocking_recv().unwrap(), 7);
        assert!(!flag.load(Ordering::Relaxed));
    }
}
