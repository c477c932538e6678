//! The live view of the cluster: `GET /v1/events`, the stream of server-sent events that the
//! dashboard (`/ui`) draws.
//!
//! While at least one viewer is connected, one sampler task on the node reads the status of
//! every member once a second (its own directly, the others' through their `/v1/status`),
//! derives rates, latency percentiles and a timeline of what changed (leaders, members out
//! of reach and back, membership, snapshot transfers), and publishes the sample. A viewer
//! gets the latest sample only (a `watch` channel): a slow viewer skips samples and nothing
//! is ever buffered for it. With no viewer left, the sampler stops. The last
//! [`HISTORY_POINTS`] points and [`TIMELINE_EVENTS`] timeline events are kept for viewers
//! that connect later.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::sse::Event;
use axum::response::Response;
use raft_client::MemberRole;
use raft_core::NodeId;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::error::ApiError;
use crate::metrics::LATENCY_BUCKETS;
use crate::state::AppState;

/// How often the sampler reads the members.
pub(crate) const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// How long the sampler waits for a member's status before taking it as out of reach.
const MEMBER_TIMEOUT: Duration = Duration::from_millis(800);
/// Points of history kept (one per sample: five minutes).
pub(crate) const HISTORY_POINTS: usize = 300;
/// Timeline events kept.
pub(crate) const TIMELINE_EVENTS: usize = 100;

/// The sampler's output and what it keeps, shared by the viewers of one node.
#[derive(Debug)]
pub(crate) struct Dashboard {
    latest: watch::Sender<Option<Arc<Value>>>,
    kept: Mutex<Kept>,
    running: AtomicBool,
}

#[derive(Debug, Default)]
struct Kept {
    points: VecDeque<Value>,
    timeline: VecDeque<Value>,
}

impl Default for Dashboard {
    fn default() -> Self {
        Dashboard {
            latest: watch::Sender::new(None),
            kept: Mutex::default(),
            running: AtomicBool::new(false),
        }
    }
}

impl Dashboard {
    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        match self.kept.lock() {
            Ok(k) => k,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// A viewer's receiver; starts the sampler if it is not running.
    fn subscribe(st: &AppState) -> watch::Receiver<Option<Arc<Value>>> {
        let rx = st.dashboard.latest.subscribe();
        if !st.dashboard.running.swap(true, Ordering::AcqRel) {
            st.background.spawn(run_sampler(st.clone()));
        }
        rx
    }

    fn publish(&self, sample: Value, point: Value, events: Vec<Value>) -> Arc<Value> {
        let mut k = self.kept();
        k.points.push_back(point);
        while k.points.len() > HISTORY_POINTS {
            k.points.pop_front();
        }
        k.timeline.extend(events);
        while k.timeline.len() > TIMELINE_EVENTS {
            k.timeline.pop_front();
        }
        let mut sample = sample;
        sample["timeline"] = Value::Array(k.timeline.iter().cloned().collect());
        let sample = Arc::new(sample);
        self.latest.send_replace(Some(sample.clone()));
        sample
    }

    fn history(&self) -> Value {
        let k = self.kept();
        json!({
            "points": k.points.iter().cloned().collect::<Vec<_>>(),
            "timeline": k.timeline.iter().cloned().collect::<Vec<_>>(),
            "interval_ms": SAMPLE_INTERVAL.as_millis() as u64,
        })
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `GET /v1/events` → server-sent events: `history` once (the points and timeline kept),
/// then `cluster` (the latest sample) about once a second; `closing` when the node stops.
#[utoipa::path(get, path = "/v1/events", tag = "dashboard",
    responses((status = 200, description = "Server-sent events: `history` once, then `cluster` samples about once a second; `closing`", content_type = "text/event-stream"),
        (status = 429, description = "Too many streams (--max-watchers)", body = crate::openapi::ErrorBody)))]
pub(crate) async fn events(
    State(st): State<AppState>,
    cred: Option<axum::Extension<crate::auth::Credential>>,
    addr: Option<axum::Extension<crate::streams::ClientAddr>>,
) -> Result<Response, ApiError> {
    let admission = crate::watch::admit(&st, (cred, addr))?;
    let rx = Dashboard::subscribe(&st);
    // Browsers reconnect after `retry`; the page moves to another member after two failures.
    let first = Event::default()
        .event("history")
        .retry(Duration::from_secs(1))
        .data(st.dashboard.history().to_string());
    struct S {
        st: AppState,
        rx: watch::Receiver<Option<Arc<Value>>>,
        first: Option<Event>,
        initial: bool,
        ended: bool,
    }
    fn cluster(sample: &Value) -> Event {
        Event::default().event("cluster").data(sample.to_string())
    }
    let s = S {
        st: st.clone(),
        rx,
        first: Some(first),
        initial: true,
        ended: false,
    };
    let stream = futures_util::stream::unfold(s, |mut s| async move {
        if let Some(e) = s.first.take() {
            return Some((Ok::<_, Infallible>(e), s));
        }
        loop {
            if s.ended {
                return None;
            }
            if s.initial {
                // The sample published before this viewer came, if any.
                s.initial = false;
                let latest = s.rx.borrow_and_update().clone();
                if let Some(sample) = latest {
                    return Some((Ok(cluster(&sample)), s));
                }
            }
            let closing = s.st.closing.clone();
            tokio::select! {
                changed = s.rx.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    let latest = s.rx.borrow_and_update().clone();
                    if let Some(sample) = latest {
                        return Some((Ok(cluster(&sample)), s));
                    }
                }
                _ = closing.cancelled() => {
                    s.ended = true;
                    let e = Event::default().event("closing").data(
                        json!({"message": "the node is stopping; the dashboard moves to another member"}).to_string(),
                    );
                    return Some((Ok(e), s));
                }
            }
        }
    });
    Ok(crate::watch::sse(st, admission, stream))
}

/// What the previous sample saw, to derive rates and the timeline.
#[derive(Default)]
struct Previous {
    at: Option<Instant>,
    leader: Option<(NodeId, u64)>,
    had_leader: bool,
    commit: u64,
    matched: BTreeMap<NodeId, u64>,
    reachable: BTreeMap<NodeId, bool>,
    voters: BTreeSet<NodeId>,
    learners: BTreeSet<NodeId>,
    /// Per member: proposals timed and the cumulative latency buckets.
    proposals: BTreeMap<NodeId, (u64, Vec<u64>)>,
    transfers: BTreeSet<(NodeId, u64, String, u64)>,
}

async fn run_sampler(st: AppState) {
    // The node stopping ends the sampler wherever it is, a sample's calls included.
    tokio::select! {
        () = sample_while_watched(&st) => {}
        () = st.closing.cancelled() => st.dashboard.running.store(false, Ordering::Release),
    }
}

/// Samples about once a second while anyone watches.
async fn sample_while_watched(st: &AppState) {
    let client = raft_http_client::Client::with_config(
        [st.self_api(), "127.0.0.1:0".to_string()],
        raft_http_client::ClientConfig {
            timeout: MEMBER_TIMEOUT,
            retries: 0,
            ..(*st.peer_api).clone()
        },
    );
    let Ok(client) = client else {
        st.dashboard.running.store(false, Ordering::Release);
        return;
    };
    let mut prev = Previous::default();
    loop {
        let (sample, point, events) = sample(st, &client, &mut prev).await;
        st.dashboard.publish(sample, point, events);
        if st.dashboard.latest.receiver_count() == 0 {
            st.dashboard.running.store(false, Ordering::Release);
            // A viewer that subscribed just now saw the sampler running: take over again.
            if st.dashboard.latest.receiver_count() == 0
                || st.dashboard.running.swap(true, Ordering::AcqRel)
            {
                return;
            }
        }
        tokio::time::sleep(SAMPLE_INTERVAL).await;
    }
}

fn event(at: u64, kind: &str, text: String, term: Option<u64>) -> Value {
    json!({"at_unix_ms": at, "kind": kind, "text": text, "term": term})
}

/// The latency (ms) under which fraction `q` of the proposals counted in `delta` (cumulative
/// per bucket, `count` in all) fell; `None` when there were none.
fn quantile_ms(delta: &[u64], count: u64, q: f64) -> Option<f64> {
    if count == 0 {
        return None;
    }
    let want = (count as f64 * q).ceil() as u64;
    for (i, c) in delta.iter().enumerate() {
        if *c >= want {
            return LATENCY_BUCKETS.get(i).map(|s| s * 1000.0);
        }
    }
    // Beyond the last bucket.
    LATENCY_BUCKETS.last().map(|s| s * 1000.0)
}

fn u(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// One reading of every member; returns the sample, its history point and new timeline
/// events.
async fn sample(
    st: &AppState,
    client: &raft_http_client::Client,
    prev: &mut Previous,
) -> (Value, Value, Vec<Value>) {
    let now = Instant::now();
    let at = unix_ms(SystemTime::now());
    let me = st.node.id();
    let members = st.node.members().await.unwrap_or_default();
    let reads = members.iter().map(|m| async move {
        if m.id == me {
            crate::ops::status_json(st).await.ok()
        } else {
            match &m.api {
                Some(api) => client.status(Some(api)).await.ok(),
                None => None,
            }
        }
    });
    let statuses: Vec<Option<Value>> = futures_util::future::join_all(reads).await;
    let dt = prev
        .at
        .map(|t| now.duration_since(t).as_secs_f64())
        .filter(|d| *d > 0.0);

    // The leader: the member that says it leads, in the highest term.
    let leader = members
        .iter()
        .zip(&statuses)
        .filter_map(|(m, s)| s.as_ref().map(|s| (m.id, s)))
        .filter(|(_, s)| s["role"] == "leader")
        .map(|(id, s)| (id, u(s, "term")))
        .max_by_key(|(_, t)| *t);
    let term = statuses
        .iter()
        .flatten()
        .map(|s| u(s, "term"))
        .max()
        .unwrap_or(0);
    let leader_status = leader.and_then(|(id, _)| {
        members
            .iter()
            .zip(&statuses)
            .find(|(m, _)| m.id == id)
            .and_then(|(_, s)| s.clone())
    });
    let progress: BTreeMap<NodeId, Value> = leader_status
        .as_ref()
        .and_then(|s| s["progress"].as_array())
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p["id"].as_u64().map(|id| (id, p.clone())))
                .collect()
        })
        .unwrap_or_default();

    let mut events = Vec::new();
    if prev.at.is_none() {
        // A sampler that just started: the leaders this node saw before it.
        for c in st.node.leader_history() {
            events.push(event(
                unix_ms(c.at),
                "leader",
                format!("node {} leads in term {}", c.leader, c.term),
                Some(c.term),
            ));
            prev.leader = Some((c.leader, c.term));
            prev.had_leader = true;
        }
    }
    let mut rows = Vec::new();
    let mut transfers = Vec::new();
    let mut now_transfers = BTreeSet::new();
    let mut commit = 0u64;
    let mut delta = vec![0u64; LATENCY_BUCKETS.len()];
    let mut delta_count = 0u64;
    let mut proposals = BTreeMap::new();
    let mut voters = BTreeSet::new();
    let mut learners = BTreeSet::new();
    for (m, s) in members.iter().zip(&statuses) {
        let voter = m.role == MemberRole::Voter;
        if voter {
            voters.insert(m.id);
        } else {
            learners.insert(m.id);
        }
        let reachable = s.is_some();
        match prev.reachable.get(&m.id) {
            Some(true) if !reachable => events.push(event(
                at,
                "unreachable",
                format!("node {} does not answer", m.id),
                None,
            )),
            Some(false) if reachable => events.push(event(
                at,
                "reachable",
                format!("node {} answers again", m.id),
                None,
            )),
            _ => {}
        }
        prev.reachable.insert(m.id, reachable);
        let Some(s) = s else {
            rows.push(json!({
                "id": m.id, "api": m.api, "voter": voter, "reachable": false,
                "role": "unreachable", "leader": false,
            }));
            continue;
        };
        commit = commit.max(u(s, "commit_index"));
        // Proposal latency over the interval, summed over the members.
        let count = s["proposals"]["latency"]["count"].as_u64().unwrap_or(0);
        let cumulative: Vec<u64> = s["proposals"]["latency"]["cumulative"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(0)).collect())
            .unwrap_or_default();
        if let Some((pc, pb)) = prev.proposals.get(&m.id) {
            if count >= *pc && cumulative.len() == delta.len() && pb.len() == delta.len() {
                delta_count += count - pc;
                for (i, d) in delta.iter_mut().enumerate() {
                    *d += cumulative[i].saturating_sub(pb[i]);
                }
            }
        }
        proposals.insert(m.id, (count, cumulative));
        // Replication as the leader sees it.
        let p = progress.get(&m.id);
        let matched = p.and_then(|p| p["match_index"].as_u64());
        let rate = match (matched, prev.matched.get(&m.id), dt) {
            (Some(now_m), Some(before), Some(dt)) => {
                Some((now_m.saturating_sub(*before) as f64 / dt).round())
            }
            _ => None,
        };
        if let Some(mi) = matched {
            prev.matched.insert(m.id, mi);
        }
        let is_leader = leader.map(|(l, _)| l) == Some(m.id);
        rows.push(json!({
            "id": m.id,
            "api": m.api,
            "voter": voter,
            "reachable": true,
            "leader": is_leader,
            "role": s["role"],
            "term": s["term"],
            "commit_index": s["commit_index"],
            "applied_index": s["applied_index"],
            "last_index": s["last_index"],
            "snapshot_index": s["snapshot_index"],
            "release": s["version"]["release"],
            "match_index": if is_leader { s["last_index"].clone() } else { json!(matched) },
            "lag": if is_leader { json!(0) } else { p.map_or(Value::Null, |p| p["lag"].clone()) },
            "replication": p.map_or(Value::Null, |p| p["state"].clone()),
            "entries_per_sec": rate,
        }));
        for t in s["snapshots"]["transfers"].as_array().into_iter().flatten() {
            let mut t = t.clone();
            let key = (
                m.id,
                u(&t, "peer"),
                t["direction"].as_str().unwrap_or("").to_string(),
                u(&t, "index"),
            );
            if !prev.transfers.contains(&key) {
                events.push(event(
                    at,
                    "snapshot",
                    format!(
                        "node {} {} a snapshot at index {} {} node {}",
                        key.0,
                        if key.2 == "out" { "sends" } else { "receives" },
                        key.3,
                        if key.2 == "out" { "to" } else { "from" },
                        key.1
                    ),
                    None,
                ));
            }
            now_transfers.insert(key);
            t["node"] = json!(m.id);
            transfers.push(t);
        }
    }
    for gone in prev.transfers.difference(&now_transfers) {
        events.push(event(
            at,
            "snapshot",
            format!(
                "snapshot transfer at index {} between nodes {} and {} ended",
                gone.3, gone.0, gone.1
            ),
            None,
        ));
    }
    prev.transfers = now_transfers;

    // Leadership.
    match leader {
        Some((l, t)) if prev.leader != Some((l, t)) => events.push(event(
            at,
            "leader",
            format!("node {l} leads in term {t}"),
            Some(t),
        )),
        None if prev.had_leader => events.push(event(
            at,
            "no-leader",
            "no member says it leads".to_string(),
            Some(term),
        )),
        _ => {}
    }
    if leader.is_some() {
        prev.leader = leader;
    }
    prev.had_leader = leader.is_some();

    // Membership, once there is a previous reading to compare with.
    if prev.at.is_some() {
        for id in voters.difference(&prev.voters) {
            let text = if prev.learners.contains(id) {
                format!("node {id} promoted to voter")
            } else {
                format!("node {id} added as a voter")
            };
            events.push(event(at, "membership", text, None));
        }
        for id in learners.difference(&prev.learners) {
            if !prev.voters.contains(id) {
                events.push(event(
                    at,
                    "membership",
                    format!("node {id} added as a learner"),
                    None,
                ));
            }
        }
        for id in prev.voters.union(&prev.learners) {
            if !voters.contains(id) && !learners.contains(id) {
                events.push(event(at, "membership", format!("node {id} removed"), None));
            }
        }
    }
    prev.voters = voters;
    prev.learners = learners;

    let writes_per_sec = match dt {
        Some(dt) if prev.commit > 0 => {
            Some((commit.saturating_sub(prev.commit) as f64 / dt).round())
        }
        _ => None,
    };
    prev.commit = commit;
    prev.proposals = proposals;
    prev.at = Some(now);
    let point = json!({
        "at_unix_ms": at,
        "commit_index": commit,
        "entries_per_sec": writes_per_sec,
        "proposals_per_sec": dt.map(|dt| (delta_count as f64 / dt).round()),
        "latency_p50_ms": quantile_ms(&delta, delta_count, 0.5),
        "latency_p99_ms": quantile_ms(&delta, delta_count, 0.99),
    });
    let sample = json!({
        "at_unix_ms": at,
        "node": me,
        "leader": leader.map(|(l, _)| l),
        "term": term,
        "commit_index": commit,
        "cluster_version": st.node.cluster_version().to_string(),
        "members": rows,
        "transfers": transfers,
        "point": point,
    });
    (sample, point, events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_first_bucket_holding_enough_proposals() {
        // 10 proposals: 5 within 1 ms, 9 within 5 ms, all within 50 ms.
        let mut cum = vec![0u64; LATENCY_BUCKETS.len()];
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            cum[i] = if *le >= 0.05 {
                10
            } else if *le >= 0.005 {
                9
            } else if *le >= 0.001 {
                5
            } else {
                0
            };
        }
        assert_eq!(quantile_ms(&cum, 10, 0.5), Some(1.0));
        assert_eq!(quantile_ms(&cum, 10, 0.9), Some(5.0));
        assert_eq!(quantile_ms(&cum, 10, 0.99), Some(50.0));
        assert_eq!(quantile_ms(&cum, 0, 0.5), None);
    }

    #[test]
    fn proposals_slower_than_every_bucket_count_as_the_last_bound() {
        let cum = vec![0u64; LATENCY_BUCKETS.len()];
        assert_eq!(quantile_ms(&cum, 3, 0.5), Some(2500.0));
    }

    #[test]
    fn the_history_keeps_a_bounded_number_of_points_and_events() {
        let d = Dashboard::default();
        for i in 0..(HISTORY_POINTS + 10) {
            let e = event(i as u64, "leader", format!("{i}"), None);
            d.publish(json!({}), json!({"i": i}), vec![e]);
        }
        let h = d.history();
        assert_eq!(h["points"].as_array().map(Vec::len), Some(HISTORY_POINTS));
        assert_eq!(
            h["timeline"].as_array().map(Vec::len),
            Some(TIMELINE_EVENTS)
        );
        assert_eq!(h["points"][0]["i"], 10, "the oldest points are dropped");
        let latest = d.latest.borrow().clone();
        assert_eq!(
            latest.map(|s| s["timeline"].as_array().map_or(0, Vec::len)),
            Some(TIMELINE_EVENTS)
        );
    }
}
