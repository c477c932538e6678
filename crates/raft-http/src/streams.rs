//! What every stream of server-sent events (`/v1/log/stream`, `/v1/kv/watch`,
//! `/v1/events`) shares: a slot of the node's stream budget, taken fairly, and a life no
//! longer than its credential's.
//!
//! - **Slots** ([`StreamSlots`]): at most [`HttpConfig::max_watchers`] streams at once. Of
//!   these, the last [`HttpConfig::stream_reserve`] are kept for admin tokens and members,
//!   so that a flood of readers cannot lock the administrators and the dashboard's members
//!   out; every other credential holds at most [`HttpConfig::max_streams_per_token`] slots,
//!   and every client address at most [`HttpConfig::max_streams_per_address`]. Past a limit
//!   the answer is 429 `too_many_watchers`, naming the limit.
//! - **Credentials** ([`guard`]): a stream is checked again whenever the token file is
//!   reloaded or the membership changes. Once its token is removed (or a member's
//!   certificate names a node that left the membership), it ends with a `revoked` event
//!   saying why.
//! - **Lifetime**: a stream open for [`HttpConfig::max_stream_lifetime`] ends with a
//!   `closing` event; clients reconnect with `Last-Event-ID` and lose nothing, and a
//!   credential that can no longer be checked (an expired client certificate) cannot hold a
//!   stream for ever.
//!
//! [`HttpConfig::max_watchers`]: crate::HttpConfig::max_watchers
//! [`HttpConfig::stream_reserve`]: crate::HttpConfig::stream_reserve
//! [`HttpConfig::max_streams_per_token`]: crate::HttpConfig::max_streams_per_token
//! [`HttpConfig::max_streams_per_address`]: crate::HttpConfig::max_streams_per_address
//! [`HttpConfig::max_stream_lifetime`]: crate::HttpConfig::max_stream_lifetime

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::sse::Event;
use futures_util::{Stream, StreamExt};
use serde_json::json;

use crate::auth::{Credential, Holder, Role};
use crate::error::ApiError;
use crate::state::{AppState, HttpConfig};

/// The address a request came from, put in its extensions by the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// The node's stream slots, and who holds them.
#[derive(Debug)]
pub(crate) struct StreamSlots {
    max: usize,
    reserve: usize,
    per_token: usize,
    per_address: usize,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    by_holder: HashMap<Holder, usize>,
    by_address: HashMap<IpAddr, usize>,
}

/// One stream's slot, given back when it is dropped.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    slots: Arc<StreamSlots>,
    holder: Option<Holder>,
    address: Option<IpAddr>,
}

fn too_many(message: String) -> ApiError {
    let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_watchers", message);
    e.retry_after = Some(1);
    e
}

impl StreamSlots {
    pub(crate) fn new(cfg: &HttpConfig) -> StreamSlots {
        let max = cfg.max_watchers.max(1);
        StreamSlots {
            max,
            reserve: cfg.stream_reserve.min(max - 1),
            per_token: cfg.max_streams_per_token.max(1),
            per_address: cfg.max_streams_per_address.max(1),
            held: Mutex::new(Held::default()),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        match self.held.lock() {
            Ok(h) => h,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Streams open now.
    pub(crate) fn open(&self) -> usize {
        self.held().total
    }

    /// A slot for a stream of `cred` from `address`, or the 429 that says which limit it
    /// reached.
    pub(crate) fn take(
        self: &Arc<Self>,
        cred: &Credential,
        address: Option<IpAddr>,
    ) -> Result<StreamSlot, ApiError> {
        let mut held = self.held();
        if held.total >= self.max {
            return Err(too_many(format!(
                "{} streams are already open on this node (--max-watchers); retry later or use another node",
                self.max
            )));
        }
        let privileged = cred.privileged();
        if privileged {
            held.total += 1;
            return Ok(StreamSlot {
                slots: self.clone(),
                holder: None,
                address: None,
            });
        }
        if held.total >= self.max - self.reserve {
            return Err(too_many(format!(
                "the last {} of this node's {} stream slots are kept for admin tokens and members (--stream-reserve); retry later or use another node",
                self.reserve, self.max
            )));
        }
        let holder = matches!(cred.holder, Holder::Token { .. }).then(|| cred.holder.clone());
        if let Some(h) = &holder {
            if held.by_holder.get(h).copied().unwrap_or(0) >= self.per_token {
                return Err(too_many(format!(
                    "{} already holds {} streams on this node (--max-streams-per-token); close some first",
                    cred.describe(),
                    self.per_token
                )));
            }
        }
        if let Some(a) = address {
            if held.by_address.get(&a).copied().unwrap_or(0) >= self.per_address {
                return Err(too_many(format!(
                    "{a} already holds {} streams on this node (--max-streams-per-address); close some first",
                    self.per_address
                )));
            }
        }
        held.total += 1;
        if let Some(h) = &holder {
            *held.by_holder.entry(h.clone()).or_default() += 1;
        }
        if let Some(a) = address {
            *held.by_address.entry(a).or_default() += 1;
        }
        Ok(StreamSlot {
            slots: self.clone(),
            holder,
            address,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut held = self.slots.held();
        held.total = held.total.saturating_sub(1);
        if let Some(h) = self.holder.take() {
            if let Some(n) = held.by_holder.get_mut(&h) {
                *n -= 1;
                if *n == 0 {
                    held.by_holder.remove(&h);
                }
            }
        }
        if let Some(a) = self.address {
            if let Some(n) = held.by_address.get_mut(&a) {
                *n -= 1;
                if *n == 0 {
                    held.by_address.remove(&a);
                }
            }
        }
    }
}

/// The credential and address of a stream's request, and its slot: what [`guard`] needs.
pub(crate) struct Admission {
    cred: Credential,
    slot: StreamSlot,
}

/// Takes a slot for a stream of `cred` (the request's [`Credential`]; none when the
/// request did not pass the access check, which only tests do) from `address`.
pub(crate) fn admit(
    st: &AppState,
    cred: Option<Credential>,
    address: Option<ClientAddr>,
) -> Result<Admission, ApiError> {
    let cred = cred.unwrap_or(Credential {
        holder: Holder::Anyone,
        role: Role::Admin,
    });
    let slot = st.streams.take(&cred, address.map(|a| a.0.ip()))?;
    Ok(Admission { cred, slot })
}

/// Why `cred` no longer grants a stream, if it does not.
fn revoked(st: &AppState, cred: &Credential) -> Option<String> {
    match st.access.grants_now(cred, &st.node) {
        Some(role) if role >= Role::Read => None,
        _ => Some(match &cred.holder {
            Holder::Member(id) => format!(
                "node {id} is no longer a member of this cluster: its certificate grants nothing"
            ),
            _ => format!(
                "{} was revoked (the token file was reloaded without it)",
                cred.describe()
            ),
        }),
    }
}

/// `inner`'s events, until the stream's credential stops granting it (then a `revoked`
/// event) or it reaches [`HttpConfig::max_stream_lifetime`] (then a `closing` event).
pub(crate) fn guard<S>(
    st: AppState,
    admission: Admission,
    inner: S,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static
where
    S: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    struct Guarded<S> {
        st: AppState,
        cred: Credential,
        inner: std::pin::Pin<Box<S>>,
        tokens: tokio::sync::watch::Receiver<u64>,
        members: tokio::sync::watch::Receiver<u64>,
        /// Whether each of those still has a sender.
        watching: (bool, bool),
        until: Option<tokio::time::Instant>,
        ended: bool,
        _slot: StreamSlot,
    }
    let mut tokens = st.access.watch();
    tokens.borrow_and_update();
    let mut members = st.node.watch_members();
    members.borrow_and_update();
    let lifetime = st.cfg.max_stream_lifetime;
    let until = (!lifetime.is_zero())
        .then(|| tokio::time::Instant::now().checked_add(lifetime))
        .flatten();
    let g = Guarded {
        st,
        cred: admission.cred,
        inner: Box::pin(inner),
        tokens,
        members,
        watching: (true, true),
        until,
        ended: false,
        _slot: admission.slot,
    };
    futures_util::stream::unfold(g, move |mut g| async move {
        if g.ended {
            return None;
        }
        loop {
            let until = g.until;
            let expire = async move {
                match until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                changed = g.tokens.changed(), if g.watching.0 => {
                    g.watching.0 = changed.is_ok();
                }
                changed = g.members.changed(), if g.watching.1 => {
                    g.watching.1 = changed.is_ok();
                }
                () = expire => {
                    g.ended = true;
                    let data = json!({
                        "reason": "lifetime",
                        "message": format!(
                            "this stream reached its longest life ({} ms, --max-stream-lifetime-ms); reconnect with Last-Event-ID to resume",
                            lifetime.as_millis()
                        ),
                    });
                    let e = Event::default().event("closing").data(data.to_string());
                    return Some((Ok(e), g));
                }
                item = g.inner.next() => return item.map(|i| (i, g)),
            }
            if let Some(why) = revoked(&g.st, &g.cred) {
                g.ended = true;
                tracing::info!(holder = %g.cred.describe(), "ending a stream: {why}");
                let data = json!({ "message": why });
                let e = Event::default().event("revoked").data(data.to_string());
                return Some((Ok(e), g));
            }
        }
    })
}

/// The default longest life of a stream: an hour.
pub(crate) const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(max: usize, reserve: usize, per_token: usize, per_address: usize) -> Arc<StreamSlots> {
        let cfg = HttpConfig {
            max_watchers: max,
            stream_reserve: reserve,
            max_streams_per_token: per_token,
            max_streams_per_address: per_address,
            ..HttpConfig::default()
        };
        Arc::new(StreamSlots::new(&cfg))
    }

    fn token(name: &str, role: Role) -> Credential {
        Credential {
            holder: Holder::Token {
                name: name.into(),
                hash: format!("hash of {name}"),
            },
            role,
        }
    }

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn one_token_cannot_take_more_than_its_share() {
        let s = slots(100, 0, 3, 100);
        let reader = token("reader", Role::Read);
        let held: Vec<_> = (0..3).map(|i| s.take(&reader, ip(i)).unwrap()).collect();
        let refused = s.take(&reader, ip(9)).unwrap_err();
        assert_eq!(refused.code, "too_many_watchers");
        assert!(
            refused.message.contains("--max-streams-per-token"),
            "{}",
            refused.message
        );
        // Another token still gets one; a slot given back is free again.
        assert!(s.take(&token("other", Role::Read), ip(9)).is_ok());
        drop(held);
        assert!(s.take(&reader, ip(9)).is_ok());
    }

    #[test]
    fn one_address_cannot_take_more_than_its_share_whatever_the_tokens() {
        let s = slots(100, 0, 100, 2);
        let _a = s.take(&token("a", Role::Read), ip(1)).unwrap();
        let _b = s.take(&token("b", Role::Write), ip(1)).unwrap();
        let refused = s.take(&token("c", Role::Read), ip(1)).unwrap_err();
        assert!(
            refused.message.contains("--max-streams-per-address"),
            "{}",
            refused.message
        );
        assert!(s.take(&token("c", Role::Read), ip(2)).is_ok());
    }

    #[test]
    fn the_reserve_is_left_to_admins_and_members() {
        let s = slots(4, 2, 100, 100);
        let reader = token("reader", Role::Read);
        let _r: Vec<_> = (0..2).map(|i| s.take(&reader, ip(i)).unwrap()).collect();
        let refused = s.take(&reader, ip(7)).unwrap_err();
        assert!(
            refused.message.contains("--stream-reserve"),
            "{}",
            refused.message
        );
        let admin = token("ops", Role::Admin);
        let member = Credential {
            holder: Holder::Member(2),
            role: Role::Read,
        };
        let _a = s.take(&admin, ip(1)).unwrap();
        let _m = s.take(&member, ip(1)).unwrap();
        // Now every slot is taken: even an admin waits.
        let full = s.take(&admin, ip(1)).unwrap_err();
        assert!(full.message.contains("--max-watchers"), "{}", full.message);
        assert_eq!(s.open(), 4);
    }

    #[test]
    fn an_open_api_limits_each_address() {
        let s = slots(10, 2, 1, 3);
        let anyone = Credential {
            holder: Holder::Anyone,
            role: Role::Admin,
        };
        let _held: Vec<_> = (0..3).map(|_| s.take(&anyone, ip(1)).unwrap()).collect();
        assert!(s.take(&anyone, ip(1)).is_err());
        assert!(s.take(&anyone, ip(2)).is_ok());
    }
}
