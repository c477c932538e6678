//! The OpenAPI description of the HTTP API, generated (utoipa) from the `#[utoipa::path]`
//! attributes on the handlers and the body shapes below; served at `GET /v1/openapi.json`.
//! A test checks that every route of [`crate::router`] is described, and nothing else.

// The shapes below describe bodies for the document; the handlers build their answers as
// JSON values and parse requests with their own strict types.
#![allow(dead_code)]

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use utoipa::{OpenApi, ToSchema};

use crate::state::{AppState, HttpConfig};

/// `POST /v1/log`: an entry to append, or a batch of entries (exactly one of the two).
#[derive(ToSchema)]
#[serde(untagged)]
pub(crate) enum AppendRequest {
    /// One entry.
    One(AppendOne),
    /// A batch.
    Many(AppendMany),
}

/// One entry to append.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AppendOne {
    /// The entry's text, stored exactly as given.
    entry: String,
}

/// Entries to append together, all or none, at consecutive indexes.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AppendMany {
    /// The entries (at least one, at most `--max-batch-entries`).
    #[schema(min_items = 1)]
    entries: Vec<String>,
}

/// Where an entry, or each entry of a batch, was committed.
#[derive(ToSchema)]
pub(crate) struct Appended {
    /// Its index in the log (a single entry).
    index: Option<u64>,
    /// The index of each entry, in order (a batch).
    indexes: Option<Vec<u64>>,
    /// The term of the leader that committed it.
    term: u64,
}

/// One committed log entry.
#[derive(ToSchema)]
pub(crate) struct LogEntry {
    /// Its index.
    index: u64,
    /// Its term.
    term: u64,
    /// `entry` (posted text), `noop` (a leader's first entry), `kv` (a key-value write),
    /// `bytes` (a payload that is not UTF-8), `config` (a membership change).
    kind: String,
    /// The text, for `entry`.
    entry: Option<String>,
    /// The command, for `kv`: `{"op": "put"|"delete", "key", "value", "expect",
    /// "if_revision"}`.
    #[schema(value_type = Option<Object>)]
    command: Option<()>,
    /// The payload in hexadecimal, for `bytes`.
    hex: Option<String>,
}

/// A page of the log.
#[derive(ToSchema)]
pub(crate) struct LogPage {
    /// The entries, in order.
    entries: Vec<LogEntry>,
    /// The index to ask for next.
    next: u64,
    /// The first index kept under the retention policy.
    first: u64,
}

/// `PUT /v1/kv/{key}`: the value, and the conditions of a compare-and-swap.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PutRequest {
    /// The new value.
    value: String,
    /// Write only if the current value is this one (`null`: only if the key is absent).
    #[schema(nullable)]
    expect: Option<String>,
    /// Write only if the key's revision is this one (0: absent).
    if_revision: Option<u64>,
}

/// `DELETE /v1/kv/{key}`: the conditions of a compare-and-delete (optional).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteRequest {
    /// Delete only if the current value is this one (`null`: only if absent).
    #[schema(nullable)]
    expect: Option<String>,
    /// Delete only if the key's revision is this one.
    if_revision: Option<u64>,
}

/// A committed write of a key.
#[derive(ToSchema)]
pub(crate) struct Written {
    /// The key.
    key: String,
    /// The value written (absent for a delete).
    value: Option<String>,
    /// The key's new revision (the entry's index; absent for a delete).
    revision: Option<u64>,
    /// The value before, `null` when the key was absent.
    previous: Option<String>,
    /// The revision before, `null` when the key was absent.
    previous_revision: Option<u64>,
    /// The entry's index.
    index: u64,
    /// The entry's term.
    term: u64,
}

/// A key, its value and revision.
#[derive(ToSchema)]
pub(crate) struct KeyValue {
    /// The key.
    key: String,
    /// Its value.
    value: String,
    /// The index of its last write.
    revision: u64,
    /// The index this node had applied when it read it (single-key reads).
    applied: Option<u64>,
}

/// A range of keys.
#[derive(ToSchema)]
pub(crate) struct KvList {
    /// The keys, in order.
    kvs: Vec<KeyValue>,
    /// Whether more keys match.
    more: bool,
    /// The index this node had applied when it read them.
    applied: u64,
}

/// A member of the cluster.
#[derive(ToSchema)]
pub(crate) struct Member {
    /// Its id.
    id: u64,
    /// Its Raft address.
    raft: Option<String>,
    /// Its HTTP API address.
    api: Option<String>,
    /// `voter` or `learner`.
    role: String,
    /// Leader only: the highest index known to be on it.
    match_index: Option<u64>,
    /// Leader only: entries it is behind.
    lag: Option<u64>,
    /// Leader only: heard from within an election timeout.
    reachable: Option<bool>,
}

/// `POST /v1/members`: a learner to add.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddMemberRequest {
    /// The new member's id (unused in the cluster).
    id: u64,
    /// Its Raft address, `ip:port` (IPv4 here; `[v6]:port` is taken too).
    #[schema(
        pattern = r"^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9]):([0-9]|[1-9][0-9]{1,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$"
    )]
    raft: String,
    /// Its HTTP API address, `host:port` (a DNS name or an IPv4 address here; `[v6]:port`
    /// is taken too).
    #[schema(
        max_length = 253,
        pattern = r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?){0,3}:([1-9]|[1-9][0-9]{1,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$"
    )]
    api: Option<String>,
}

/// A committed membership change.
#[derive(ToSchema)]
pub(crate) struct Changed {
    /// The index of the configuration entry.
    index: u64,
}

/// `POST /v1/leader/transfer`: where to (no body: the most caught-up voter).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TransferRequest {
    /// The voter to hand leadership to.
    to: u64,
}

/// A completed leadership transfer.
#[derive(ToSchema)]
pub(crate) struct Transferred {
    /// The new leader.
    leader: u64,
}

/// Every error answer.
#[derive(ToSchema)]
pub(crate) struct ErrorBody {
    /// What went wrong.
    error: ErrorDetail,
}

/// An error's details.
#[derive(ToSchema)]
pub(crate) struct ErrorDetail {
    /// A stable code, e.g. `not_leader`, `no_leader`, `precondition_failed`.
    code: String,
    /// What happened and what to do, for people.
    message: String,
    /// The leader's API address, when known.
    leader: Option<String>,
    /// `precondition_failed` only: the key's current value and revision (`null`: absent).
    #[schema(value_type = Option<Object>)]
    current: Option<()>,
}

/// The original's `POST /request` body.
#[derive(ToSchema)]
pub(crate) struct OriginalRequest {
    /// The entry's text.
    entry: String,
}

/// The original's `POST /request` answer.
#[derive(ToSchema)]
pub(crate) struct OriginalAnswer {
    /// Whether the entry was committed here.
    success: bool,
    /// The leader's API address (empty when unknown).
    leader: String,
}

/// The original's `PUT /` body.
#[derive(ToSchema)]
pub(crate) struct OriginalPut {
    /// The key.
    key: String,
    /// The value.
    value: String,
}

/// The original's key-value answers.
#[derive(ToSchema)]
pub(crate) struct OriginalKv {
    /// The leader's API address.
    leader: String,
    /// The key (left out by a follower's answer to a write).
    key: Option<String>,
    /// The value (empty when absent).
    value: Option<String>,
}

/// `POST /ui/session`: the token to sign the browser in with.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignInRequest {
    /// A token of the token file (printable ASCII without quotes, commas, semicolons or
    /// backslashes, as `httpraft tokens add` makes them).
    #[schema(
        min_length = 1,
        max_length = 4096,
        pattern = r#"^[!#-+\--:<-\[\]-~]+$"#
    )]
    token: String,
}

/// How a read is served: `linearizable` (the default) or `local`.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Consistency {
    /// Every write acknowledged before the read began is seen (ReadIndex).
    Linearizable,
    /// This node's map as it is, possibly behind.
    Local,
}

/// What the browser's credential grants (`/ui/session`).
#[derive(ToSchema)]
pub(crate) struct Session {
    /// Whether the API checks tokens (`--tokens`).
    tokens: bool,
    /// Whether the browser's cookie (or `Authorization` header) grants anything.
    signed_in: bool,
    /// The token's name (or `node N` for a member's certificate).
    name: Option<String>,
    /// Its role: `read`, `write` or `admin`.
    role: Option<String>,
}

/// The whole document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "httpraft",
        description = "The HTTP API of a node of a Raft replicated log with a key-value view. Writes and linearizable reads go to the leader: other nodes answer 307 with its address. Every error is `{\"error\": {\"code\", \"message\", \"leader\"}}`. See docs/http-api.md."
    ),
    components(schemas(Consistency)),
    paths(
        crate::compat::post_request,
        crate::compat::get_log,
        crate::compat::put_kv,
        crate::compat::get_kv,
        crate::v1::append,
        crate::v1::read_log,
        crate::watch::log_stream,
        crate::v1::list,
        crate::watch::kv_watch,
        crate::v1::get,
        crate::v1::put,
        crate::v1::delete,
        crate::members::list,
        crate::members::add,
        crate::members::remove,
        crate::members::promote,
        crate::members::transfer,
        crate::ops::status,
        crate::ops::snapshot,
        crate::ops::healthz,
        crate::ops::readyz,
        crate::ops::metrics,
        crate::events::events,
        crate::ui::index,
        crate::ui::index_slash,
        crate::ui::script,
        crate::ui::style,
        crate::sign_in::session,
        crate::sign_in::sign_in,
        crate::sign_in::sign_out,
        openapi_json,
    ),
    tags(
        (name = "log", description = "The replicated log"),
        (name = "kv", description = "The key-value view, with compare-and-swap and watches"),
        (name = "members", description = "Membership and leadership"),
        (name = "operations", description = "Status, health, metrics, backups"),
        (name = "dashboard", description = "The live dashboard"),
        (name = "original", description = "The original httpraft's API, byte-compatible"),
    )
)]
pub(crate) struct ApiDoc;

/// `GET /v1/openapi.json` → this description.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 description of this API", content_type = "application/json")))]
pub(crate) async fn openapi_json(State(st): State<AppState>) -> Json<Value> {
    Json(document(&st.cfg))
}

/// The description of this node's API: what utoipa generates from the handlers, made
/// exact where its attributes cannot say it (see [`refine`]).
pub(crate) fn document(cfg: &HttpConfig) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    refine(&mut doc, cfg);
    doc
}

/// Routes anyone may call: no credential, so no 401 or 403 (but for cross-site writes).
const OPEN_ROUTES: [&str; 8] = [
    "/healthz",
    "/readyz",
    "/ui",
    "/ui/",
    "/ui/app.js",
    "/ui/style.css",
    "/ui/session",
    "/v1/openapi.json",
];

/// Makes the generated document say exactly what the server does:
///
/// - unsigned integers take the whole `u64` range (utoipa writes `int64`, whose range a
///   client would take to end at 2^63 - 1);
/// - parameters are absent or present, never JSON `null`, and an optional body is left out
///   rather than sent as `null`;
/// - the limits of this node's configuration (`limit` at least 1, a batch's size);
/// - the answers every route may give whatever it does: 400 for a malformed parameter or
///   body, 401 and 403 with tokens (403 also for a cross-site write), 413 and 415 for
///   bodies, 414 for keys, 429 when the node is busy, 503 for a request timeout or a
///   stopping node.
fn refine(doc: &mut Value, cfg: &HttpConfig) {
    whole_u64_range(doc);
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    // `/v1/kv/watch` is the watch for GET; PUT and DELETE there write the key `watch`, as
    // `/v1/kv/{key}` does any other.
    let key_item = paths.get("/v1/kv/{key}").cloned().unwrap_or_default();
    if let Some(watch) = paths.get_mut("/v1/kv/watch").and_then(Value::as_object_mut) {
        for method in ["put", "delete"] {
            let Some(mut op) = key_item.get(method).cloned() else {
                continue;
            };
            if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
                params.retain(|p| p["name"] != "key");
                if params.is_empty() {
                    op.as_object_mut().map(|o| o.remove("parameters"));
                }
            }
            let id = op["operationId"].as_str().unwrap_or(method).to_string();
            op["operationId"] = json!(format!("{id}_named_watch"));
            op["summary"] = json!(format!(
                "{} the key named `watch` (whose GET is the watch)",
                if method == "put" { "Writes" } else { "Deletes" }
            ));
            watch.insert(method.into(), op);
        }
    }
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            refine_operation(path, method, op);
        }
    }
    if let Some(entries) = doc
        .pointer_mut("/components/schemas/AppendMany/properties/entries")
        .and_then(Value::as_object_mut)
    {
        entries.insert("maxItems".into(), json!(cfg.max_batch_entries));
    }
}

fn whole_u64_range(v: &mut Value) {
    match v {
        Value::Object(o) => {
            let unsigned = o.get("format").and_then(Value::as_str) == Some("int64")
                && o.get("minimum").and_then(Value::as_u64) == Some(0);
            if unsigned {
                o.insert("format".into(), json!("uint64"));
                o.insert("maximum".into(), json!(u64::MAX));
            }
            o.values_mut().for_each(whole_u64_range);
        }
        Value::Array(a) => a.iter_mut().for_each(whole_u64_range),
        _ => {}
    }
}

fn refine_operation(path: &str, method: &str, op: &mut Value) {
    let mut has_input = false;
    if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
        has_input |= !params.is_empty();
        for p in params.iter_mut() {
            let name = p["name"].as_str().unwrap_or("").to_string();
            let schema = &mut p["schema"];
            if let Some(types) = schema.get_mut("type").and_then(Value::as_array_mut) {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let t = types[0].clone();
                    schema["type"] = t;
                }
            }
            match name.as_str() {
                "limit" => schema["minimum"] = json!(1),
                "wait" => schema["pattern"] = json!("^[0-9]+(ms|s)?$"),
                "key" if path.starts_with("/v1/kv/") => schema["minLength"] = json!(1),
                _ => {}
            }
        }
    }
    let mut has_body = false;
    if let Some(body) = op.get_mut("requestBody") {
        has_input = true;
        has_body = true;
        if let Some(content) = body
            .get_mut("content")
            .and_then(|c| c.get_mut("application/json"))
        {
            let schema = &mut content["schema"];
            if let Some(alts) = schema.get("oneOf").and_then(Value::as_array).cloned() {
                let not_null: Vec<Value> = alts
                    .into_iter()
                    .filter(|a| a.get("type") != Some(&json!("null")))
                    .collect();
                if not_null.len() == 1 {
                    *schema = not_null[0].clone();
                    body["required"] = json!(false);
                }
            }
        }
    }
    let responses = &mut op["responses"];
    let mut add = |code: u16, description: &str| {
        let key = code.to_string();
        if responses.get(&key).is_none() {
            responses[key] = json!({
                "description": description,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
            });
        }
    };
    let writes = !matches!(method, "get" | "head" | "options");
    let open = OPEN_ROUTES.contains(&path);
    if has_input {
        add(400, "Malformed body or parameter");
    }
    if !open {
        add(
            401,
            "With --tokens: no token, or one the node does not know",
        );
    }
    if !open || writes {
        add(
            403,
            "With --tokens: the token's role does not allow this; or a write from another site's page (`cross_origin`)",
        );
    }
    if has_body {
        add(413, "The body is larger than --max-body-bytes");
        add(415, "The body is not JSON (`Content-Type`)");
    }
    if path.starts_with("/v1/kv/") && path != "/v1/kv/watch" {
        add(414, "The key is longer than --max-key-bytes (bytes)");
    }
    if !path.starts_with("/ui") {
        add(429, "The node is busy (`busy`, `too_many_reads`, `too_many_watchers`): retry after `Retry-After`");
    }
    add(
        503,
        "The request took longer than --http-request-timeout-ms, or the node is stopping",
    );
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The (method, path) pairs `router()` serves, read from its source: every
    /// `.route("<path>", <method>(handler)...)` call. Wildcards are written as OpenAPI
    /// parameters (`{*key}` → `{key}`).
    fn routed() -> BTreeSet<(String, String)> {
        routes_in(include_str!("lib.rs"))
    }

    fn routes_in(src: &str) -> BTreeSet<(String, String)> {
        let body = &src[src.find("pub fn router(").unwrap_or(0)..];
        let mut out = BTreeSet::new();
        for chunk in body.split(".route(").skip(1) {
            let Some(rest) = chunk.trim_start().strip_prefix('"') else {
                continue;
            };
            let Some((path, rest)) = rest.split_once('"') else {
                continue;
            };
            // The method routers up to this route call's closing parenthesis.
            let mut depth = 1i32;
            let mut end = rest.len();
            for (i, c) in rest.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let methods = &rest[..end];
            let path = path.replace("{*", "{");
            for m in ["get", "post", "put", "delete"] {
                let called = methods
                    .match_indices(&format!("{m}("))
                    .any(|(i, _)| i == 0 || !methods.as_bytes()[i - 1].is_ascii_alphanumeric());
                if called {
                    out.insert((m.to_string(), path.clone()));
                }
            }
        }
        out
    }

    fn described() -> BTreeSet<(String, String)> {
        let doc = document(&HttpConfig::default());
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for m in ["get", "post", "put", "delete", "patch", "head", "options"] {
                if item.get(m).is_some() {
                    out.insert((m.to_string(), path.clone()));
                }
            }
        }
        out
    }

    #[test]
    fn every_route_is_described_and_nothing_else() {
        let routed = routed();
        assert!(routed.len() > 25, "the route scan found only {routed:?}");
        let described = described();
        let undocumented: Vec<_> = routed.difference(&described).collect();
        let unrouted: Vec<_> = described.difference(&routed).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from the OpenAPI description: {undocumented:?}"
        );
        assert!(
            unrouted.is_empty(),
            "described but not routed: {unrouted:?}"
        );
    }

    #[test]
    fn the_route_scan_reads_every_method_of_every_route_call() {
        let src = r#"pub fn router(state: AppState) -> Router {
            Router::new()
                .route("/a", get(x::a).post(x::b))
                .route("/b/{*rest}", axum::routing::delete(x::c))
                .route(
                    "/c",
                    put(x::d),
                )
                .fallback(not_found)
        }"#;
        let pairs: Vec<(String, String)> = routes_in(src).into_iter().collect();
        let want: Vec<(String, String)> = [
            ("delete", "/b/{rest}"),
            ("get", "/a"),
            ("post", "/a"),
            ("put", "/c"),
        ]
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
        assert_eq!(pairs, want);
    }

    #[test]
    fn errors_and_bodies_are_described_as_components() {
        let doc = document(&HttpConfig::default());
        for schema in ["ErrorBody", "PutRequest", "Written", "LogPage", "Member"] {
            assert!(
                doc["components"]["schemas"].get(schema).is_some(),
                "no {schema} schema"
            );
        }
        let mut ids = BTreeSet::new();
        for item in doc["paths"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(_, i)| i)
        {
            for op in item.as_object().into_iter().flatten().map(|(_, o)| o) {
                let id = op["operationId"].as_str().unwrap_or("").to_string();
                assert!(ids.insert(id.clone()), "operationId {id:?} is used twice");
            }
        }
        let put = &doc["paths"]["/v1/kv/{key}"]["put"];
        assert!(put["responses"].get("412").is_some());
        assert_eq!(put["parameters"][0]["name"], "key");
    }
}
