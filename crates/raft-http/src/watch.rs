//! Following the log and the map as they change: `GET /v1/log/stream` (committed entries)
//! and `GET /v1/kv/watch` (puts and deletes under a prefix), as server-sent events.
//!
//! Streams are pulled, never pushed: each event is read from the application store when
//! the client is ready for it, so a slow client costs a connection and nothing else, and
//! nothing is ever buffered for it. Every event's `id` is its log index; a client that
//! reconnects with `Last-Event-ID` (as browsers' `EventSource` does) resumes right after
//! it, on any node, missing and repeating nothing. A client that fell so far behind that
//! what it has not read yet was trimmed (the retention policy) gets a `compacted` event
//! naming the first index still kept, and the stream ends; when the node stops, a
//! `closing` event ends it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::Stream;
use raft_client::KvEvent;
use raft_core::{Entry, LogIndex};
use serde_json::json;

use crate::auth::Credential;
use crate::streams::Admission;

use crate::entry_json::entry_to_json;
use crate::error::ApiError;
use crate::state::{AppState, Params};

/// Entries or changes read from the store at once.
const BATCH: usize = 256;
/// Changes looked at per read of the store when filtering by prefix.
const SCAN: usize = 4096;
/// How often an idle stream sends a comment, so that proxies and the server's idle timeout
/// keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Where a stream starts: after `Last-Event-ID` if the client sends one, else at the query
/// parameter `name`, else at `default`.
fn start_at(
    headers: &HeaderMap,
    q: &std::collections::HashMap<String, String>,
    name: &str,
    default: LogIndex,
) -> Result<LogIndex, ApiError> {
    // The parameter is checked even when `Last-Event-ID` overrides it.
    let param =
        match q.get(name) {
            None => None,
            Some(s) => Some(s.parse::<u64>().map(|n| n.max(1)).map_err(|_| {
                ApiError::bad_request(format!("{name} must be a number, got {s:?}"))
            })?),
        };
    if let Some(v) = headers.get("last-event-id") {
        let id = v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| ApiError::bad_request("Last-Event-ID must be an event id (a number)"))?;
        // After the last index there is can come nothing: such a stream only waits.
        return Ok(id.saturating_add(1));
    }
    Ok(param.unwrap_or(default))
}

/// The request's credential and address, as a stream needs them ([`crate::streams`]).
pub(crate) type Caller = (
    Option<Extension<Credential>>,
    Option<Extension<crate::streams::ClientAddr>>,
);

/// A stream slot for the caller, or the 429 that says which limit it reached.
pub(crate) fn admit(st: &AppState, (cred, addr): Caller) -> Result<Admission, ApiError> {
    crate::streams::admit(st, cred.map(|c| c.0), addr.map(|a| a.0))
}

/// `stream` as server-sent events, for as long as the caller's admission allows.
pub(crate) fn sse<S>(st: AppState, admission: Admission, stream: S) -> Response
where
    S: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    Sse::new(crate::streams::guard(st, admission, stream))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

/// What a read of the store found.
enum Read<T> {
    /// These items (maybe none), and the position to read from next.
    Items(Vec<T>, LogIndex),
    /// What the client wants was trimmed; the first index still kept.
    Compacted(LogIndex),
}

/// A stream's position.
struct Follow<T> {
    st: AppState,
    next: LogIndex,
    pending: VecDeque<T>,
    applied: tokio::sync::watch::Receiver<LogIndex>,
    ended: bool,
}

fn closing_event() -> Event {
    Event::default().event("closing").data(
        json!({"message": "the node is stopping; reconnect with Last-Event-ID to another node"})
            .to_string(),
    )
}

/// A stream over the store: `read` fetches what comes from a position (on a blocking
/// thread), `event` turns an item into an event. Ends with `compacted`, `closing` or
/// `error`.
fn follow<T, R, E>(
    st: AppState,
    from: LogIndex,
    read: R,
    event: E,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static
where
    T: Send + 'static,
    R: Fn(&AppState, LogIndex) -> std::io::Result<Read<T>> + Send + Sync + 'static,
    E: Fn(&T) -> Event + Send + Sync + 'static,
{
    let read = std::sync::Arc::new(read);
    let event = std::sync::Arc::new(event);
    let applied = st.store.watch_applied();
    let state = Follow {
        st,
        next: from,
        pending: VecDeque::new(),
        applied,
        ended: false,
    };
    futures_util::stream::unfold(state, move |mut s| {
        let read = read.clone();
        let event = event.clone();
        async move {
            loop {
                if let Some(item) = s.pending.pop_front() {
                    return Some((Ok(event(&item)), s));
                }
                if s.ended {
                    return None;
                }
                if s.st.closing.is_cancelled() {
                    s.ended = true;
                    return Some((Ok(closing_event()), s));
                }
                if s.st.store.applied() >= s.next {
                    let (st, from, read) = (s.st.clone(), s.next, read.clone());
                    match tokio::task::spawn_blocking(move || read(&st, from)).await {
                        Ok(Ok(Read::Items(items, next))) => {
                            let progressed = next > s.next;
                            s.next = next;
                            s.pending.extend(items);
                            if !s.pending.is_empty() || progressed {
                                continue;
                            }
                        }
                        Ok(Ok(Read::Compacted(first))) => {
                            s.ended = true;
                            let data = json!({
                                "first": first,
                                "message": format!(
                                    "index {} and later ones up to {first} were trimmed by the retention policy before this stream read them",
                                    s.next
                                ),
                            });
                            let e = Event::default().event("compacted").data(data.to_string());
                            return Some((Ok(e), s));
                        }
                        Ok(Err(e)) => {
                            s.ended = true;
                            let data = json!({ "message": format!("cannot read the store: {e}") });
                            let e = Event::default().event("error").data(data.to_string());
                            return Some((Ok(e), s));
                        }
                        Err(_) => return None,
                    }
                }
                // Caught up: wait for more, or for the node to stop.
                let closing = s.st.closing.clone();
                tokio::select! {
                    changed = s.applied.changed() => {
                        if changed.is_err() {
                            return None;
                        }
                    }
                    _ = closing.cancelled() => {}
                }
            }
        }
    })
}

/// `GET /v1/log/stream?from=N` → server-sent events `entry` (id: the index; data: the
/// entry as in `/v1/log`), from index `N` (default: the next one to commit), as they
/// commit.
#[utoipa::path(get, path = "/v1/log/stream", tag = "log", params(
        ("from" = Option<u64>, Query, description = "The first index (default: the next to commit)"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this index")),
    responses((status = 200, description = "Server-sent events `entry` (id: the index), then `compacted` or `closing`", content_type = "text/event-stream"),
        (status = 429, description = "Too many streams (--max-watchers)", body = crate::openapi::ErrorBody)))]
pub(crate) async fn log_stream(
    State(st): State<AppState>,
    Params(q): Params,
    headers: HeaderMap,
    cred: Option<Extension<Credential>>,
    addr: Option<Extension<crate::streams::ClientAddr>>,
) -> Result<Response, ApiError> {
    let from = start_at(&headers, &q, "from", st.store.applied() + 1)?;
    let admission = admit(&st, (cred, addr))?;
    let max_bytes = st.cfg.max_log_bytes;
    let read = move |st: &AppState, from: LogIndex| -> std::io::Result<Read<Entry>> {
        let first = st.log.first_index()?;
        if from < first {
            return Ok(Read::Compacted(first));
        }
        let entries = st.log.read(from, BATCH, max_bytes)?;
        let next = entries.last().map_or(from, |e| e.index + 1);
        Ok(Read::Items(entries, next))
    };
    let event = |e: &Entry| {
        Event::default()
            .event("entry")
            .id(e.index.to_string())
            .data(entry_to_json(e).to_string())
    };
    Ok(sse(st.clone(), admission, follow(st, from, read, event)))
}

/// `GET /v1/kv/watch?prefix=p&from_revision=r` → server-sent events `put` and `delete`
/// (id: the revision; data: `{"key", "value", "revision"}`) for keys starting with `p`,
/// from revision `r` (default: changes from now on).
#[utoipa::path(get, path = "/v1/kv/watch", tag = "kv", params(
        ("prefix" = Option<String>, Query, description = "Keys starting with this"),
        ("from_revision" = Option<u64>, Query, description = "Changes from this revision (default: from now on)"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this revision")),
    responses((status = 200, description = "Server-sent events `put` and `delete` (id: the revision), then `compacted` or `closing`", content_type = "text/event-stream"),
        (status = 429, description = "Too many streams (--max-watchers)", body = crate::openapi::ErrorBody)))]
pub(crate) async fn kv_watch(
    State(st): State<AppState>,
    Params(q): Params,
    headers: HeaderMap,
    cred: Option<Extension<Credential>>,
    addr: Option<Extension<crate::streams::ClientAddr>>,
) -> Result<Response, ApiError> {
    let from = start_at(&headers, &q, "from_revision", st.store.applied() + 1)?;
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    if prefix.len() > st.cfg.max_key_bytes {
        return Err(ApiError::bad_request(format!(
            "the prefix is longer than --max-key-bytes ({})",
            st.cfg.max_key_bytes
        )));
    }
    let admission = admit(&st, (cred, addr))?;
    let read = move |st: &AppState, from: LogIndex| -> std::io::Result<Read<KvEvent>> {
        // Read first what is applied: every change up to it is in the store by then.
        let upto = st.store.applied();
        let first = st.log.events_from()?;
        if from < first {
            return Ok(Read::Compacted(first));
        }
        let (events, next) = st.log.events(from, &prefix, BATCH, SCAN)?;
        // No change past `from` up to `upto`: go on from after `upto`.
        let next = if next == from {
            from.max(upto + 1)
        } else {
            next
        };
        Ok(Read::Items(events, next))
    };
    let event = |e: &KvEvent| {
        let (kind, data) = match &e.value {
            Some(v) => (
                "put",
                json!({"key": e.key, "value": v, "revision": e.revision}),
            ),
            None => ("delete", json!({"key": e.key, "revision": e.revision})),
        };
        Event::default()
            .event(kind)
            .id(e.revision.to_string())
            .data(data.to_string())
    };
    Ok(sse(st.clone(), admission, follow(st, from, read, event)))
}
