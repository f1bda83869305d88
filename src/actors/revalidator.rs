//! The metadata revalidator: every metadata request to the Hub (HEAD of one
//! file, one-level listing, "is this a directory?") goes through here, so
//! concurrent asks for the same path share one request. The handler never
//! waits on the network: it starts a task whose result comes back as a
//! `…Done` message and is fanned out to every waiter.

use std::collections::HashMap;
use std::sync::Arc;
use tracing::Instrument;

use crate::actors::Reply;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::Remote;
use crate::error::FsResult;
use crate::hub::{RemoteEntry, RemoteFile};

type Waiters<T> = HashMap<String, Vec<Reply<FsResult<T>>>>;

pub enum RevalidatorMsg {
    /// `HEAD` a file (mount path): `None` when there is no such file.
    Head {
        path: String,
        reply: Reply<FsResult<Option<RemoteFile>>>,
    },
    HeadDone {
        path: String,
        result: FsResult<Option<RemoteFile>>,
    },
    /// List one directory (mount path), all pages.
    List {
        path: String,
        reply: Reply<FsResult<Vec<RemoteEntry>>>,
    },
    ListDone {
        path: String,
        result: FsResult<Vec<RemoteEntry>>,
    },
    IsDir {
        path: String,
        reply: Reply<FsResult<bool>>,
    },
    IsDirDone {
        path: String,
        result: FsResult<bool>,
    },
}

crate::actors::call::request!(RevalidatorMsg, "revalidator");

#[derive(Default)]
pub struct RevalidatorState {
    heads: Waiters<Option<RemoteFile>>,
    lists: Waiters<Vec<RemoteEntry>>,
    dirs: Waiters<bool>,
}

pub struct Revalidator;

/// Adds a waiter; returns true when it is the first (a request must start).
fn park<T>(map: &mut Waiters<T>, path: &str, reply: Reply<FsResult<T>>) -> bool {
    let waiters = map.entry(path.to_string()).or_default();
    waiters.push(reply);
    waiters.len() == 1
}

fn fan_out<T: Clone>(map: &mut Waiters<T>, path: &str, result: FsResult<T>) {
    for w in map.remove(path).unwrap_or_default() {
        let _ = w.send(result.clone());
    }
}

impl Actor for Revalidator {
    type Msg = RevalidatorMsg;
    type State = (Arc<Remote>, RevalidatorState);
    type Arguments = Arc<Remote>;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        remote: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok((remote, RevalidatorState::default()))
    }

    handle_in_span!("actor.revalidator");
}

/// The actor's message handling: synchronous (work that waits runs in spawned tasks).
fn on_message(
    me: ActorRef<RevalidatorMsg>,
    msg: RevalidatorMsg,
    state: &mut <Revalidator as Actor>::State,
) -> Result<(), ActorProcessingErr> {
    let (remote, st) = state;
    match msg {
        RevalidatorMsg::Head { path, reply } => {
            if park(&mut st.heads, &path, reply) {
                let remote = remote.clone();
                tokio::spawn(
                    async move {
                        let result = remote.head(&path).await;
                        let _ = me.send_message(RevalidatorMsg::HeadDone { path, result });
                    }
                    .instrument(tracing::Span::current()),
                );
            }
        }
        RevalidatorMsg::HeadDone { path, result } => fan_out(&mut st.heads, &path, result),
        RevalidatorMsg::List { path, reply } => {
            if park(&mut st.lists, &path, reply) {
                let remote = remote.clone();
                tokio::spawn(
                    async move {
                        let result = remote.list(&path).await;
                        let _ = me.send_message(RevalidatorMsg::ListDone { path, result });
                    }
                    .instrument(tracing::Span::current()),
                );
            }
        }
        RevalidatorMsg::ListDone { path, result } => fan_out(&mut st.lists, &path, result),
        RevalidatorMsg::IsDir { path, reply } => {
            if park(&mut st.dirs, &path, reply) {
                let remote = remote.clone();
                tokio::spawn(
                    async move {
                        let result = remote.is_dir(&path).await;
                        let _ = me.send_message(RevalidatorMsg::IsDirDone { path, result });
                    }
                    .instrument(tracing::Span::current()),
                );
            }
        }
        RevalidatorMsg::IsDirDone { path, result } => fan_out(&mut st.dirs, &path, result),
    }
    Ok(())
}
