//! The remote poller: every poll interval it probes the source (repo commit
//! sha, bucket `updatedAt`); when that moved, it re-lists the directories
//! the mount has loaded, a few at a time, and hands each fresh listing to the
//! inode table. What changed goes to the frontend as kernel invalidations.
//! A failing Hub (401, 429, 5xx, timeouts) makes it back off, never stop.

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use crate::actors::Reply;
use futures::StreamExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc::Sender;

use super::inode_table::InodeMsg;
use super::{call, Registry, Remote};
use crate::error::FsResult;
use crate::types::Invalidation;

/// Directories re-listed at once after a change.
const POLL_LIST_CONCURRENCY: usize = 4;
/// After failures, polls are skipped 1, 2, 4 … up to this many intervals.
const POLL_MAX_BACKOFF_TICKS: u32 = 16;

pub enum PollerMsg {
    Tick,
    Done {
        ok: bool,
    },
    /// Poll now, answering once done (tests and `SIGHUP`-style refreshes).
    PollNow {
        reply: Reply<FsResult<bool>>,
    },
}

crate::actors::call::request!(PollerMsg, "poller");

pub struct PollerArgs {
    pub remote: Arc<Remote>,
    pub registry: Registry,
    pub invalidations: Sender<Invalidation>,
    pub interval: Option<Duration>,
}

pub struct PollerState {
    args: PollerArgs,
    busy: bool,
    skip: u32,
    failures: u32,
}

pub struct Poller;

impl Actor for Poller {
    type Msg = PollerMsg;
    type State = PollerState;
    type Arguments = PollerArgs;

    async fn pre_start(
        &self,
        me: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        if let Some(every) = args.interval {
            me.send_interval(every, || PollerMsg::Tick);
        }
        Ok(PollerState { args, busy: false, skip: 0, failures: 0 })
    }

    handle_in_span!("actor.poller");
}

/// The actor's message handling: synchronous (work that waits runs in spawned tasks).
fn on_message(
    me: ActorRef<PollerMsg>,
    msg: PollerMsg,
    st: &mut <Poller as Actor>::State,
) -> Result<(), ActorProcessingErr> {
    match msg {
        PollerMsg::Tick => {
            if st.busy {
                return Ok(());
            }
            if st.skip > 0 {
                st.skip -= 1;
                return Ok(());
            }
            st.busy = true;
            let (remote, registry, tx) =
                (st.args.remote.clone(), st.args.registry.clone(), st.args.invalidations.clone());
            tokio::spawn(
                async move {
                    let ok = match poll_once(&remote, &registry, &tx).await {
                        Ok(_) => true,
                        Err(e) => {
                            tracing::warn!("polling {} failed: {e}; backing off", remote.source_label());
                            false
                        }
                    };
                    let _ = me.send_message(PollerMsg::Done { ok });
                }
                .instrument(tracing::Span::current()),
            );
        }
        PollerMsg::Done { ok } => {
            st.busy = false;
            if ok {
                st.failures = 0;
            } else {
                st.failures += 1;
                st.skip = (1u32 << st.failures.min(5)).min(POLL_MAX_BACKOFF_TICKS) - 1;
            }
        }
        PollerMsg::PollNow { reply } => {
            let (remote, registry, tx) =
                (st.args.remote.clone(), st.args.registry.clone(), st.args.invalidations.clone());
            tokio::spawn(
                async move {
                    let _ = reply.send(poll_once(&remote, &registry, &tx).await);
                }
                .instrument(tracing::Span::current()),
            );
        }
    }
    Ok(())
}

/// One poll; returns whether the source had changed. The new version is recorded only
/// once every loaded directory is re-listed at it and applied: a poll that fails on the way
/// leaves the old one, so the next poll sees the change again.
pub async fn poll_once(remote: &Remote, registry: &Registry, tx: &Sender<Invalidation>) -> FsResult<bool> {
    let probe = remote.probe().await?;
    if !remote.moved(&probe) {
        return Ok(false);
    }
    if remote.is_own_change(probe.modified) {
        tracing::debug!("{} changed by our own commit; nothing to re-list", remote.source_label());
        remote.advance(&probe);
        return Ok(false);
    }
    tracing::info!("{} changed (now {}); refreshing loaded directories", remote.source_label(), probe.version);
    let (dirs, epoch) = call(registry, |r| r.inode.clone(), |reply| InodeMsg::LoadedDirs { reply }).await?;
    let version = probe.version.as_str();
    let results: Vec<_> = futures::stream::iter(dirs)
        .map(|(ino, path)| async move {
            let listing = remote.list_at(&path, version).await;
            (ino, path, listing)
        })
        .buffer_unordered(POLL_LIST_CONCURRENCY)
        .collect()
        .await;
    for (ino, path, listing) in results {
        let entries = match listing {
            Ok(e) => e,
            // A directory that is gone lists as empty: its children disappear.
            Err(crate::error::FsError::NotFound) => Vec::new(),
            Err(e) => return Err(e),
        };
        let inval = call(
            registry,
            |r| r.inode.clone(),
            |reply| InodeMsg::ApplyListing { ino, path: path.clone(), epoch, entries: entries.clone(), reply },
        )
        .await?;
        for i in inval {
            // Full: the kernel's TTL expires the entry anyway.
            let _ = tx.try_send(i);
        }
    }
    remote.advance(&probe);
    Ok(true)
}
