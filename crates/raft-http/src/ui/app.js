// The dashboard: draws the samples of /v1/events. Loads nothing from anywhere else.
"use strict";
(function () {
  const MAX_POINTS = 300;
  const state = { points: [], members: [], node: null, failures: 0, es: null };
  const $ = (id) => document.getElementById(id);

  function show(el, v) {
    el.textContent = v === null || v === undefined ? "–" : String(v);
  }

  function ms(v) {
    if (v === null || v === undefined) return "–";
    return (v < 10 ? v.toFixed(1) : String(Math.round(v))) + " ms";
  }

  function addPoint(p) {
    if (!p) return;
    const last = state.points[state.points.length - 1];
    if (last && last.at_unix_ms >= p.at_unix_ms) return;
    state.points.push(p);
    while (state.points.length > MAX_POINTS) state.points.shift();
  }

  // A line over the kept points: x is time, y the value scaled to the highest one.
  function chart(svg, key) {
    const pts = state.points.filter((p) => typeof p[key] === "number");
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    if (pts.length < 2) return;
    const t0 = pts[0].at_unix_ms;
    const span = Math.max(1, pts[pts.length - 1].at_unix_ms - t0);
    const top = Math.max(1, ...pts.map((p) => p[key]));
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute(
      "points",
      pts
        .map((p) => {
          const x = ((p.at_unix_ms - t0) / span) * 300;
          const y = 58 - (p[key] / top) * 56;
          return x.toFixed(1) + "," + y.toFixed(1);
        })
        .join(" ")
    );
    svg.appendChild(line);
  }

  function cell(tr, value, cls) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    show(td, value);
    tr.appendChild(td);
    return td;
  }

  function renderMembers(members) {
    const body = $("members").querySelector("tbody");
    while (body.firstChild) body.removeChild(body.firstChild);
    for (const m of members) {
      const role = !m.reachable ? "unreachable" : m.voter ? m.role : "learner";
      const tr = document.createElement("tr");
      tr.dataset.memberId = String(m.id);
      tr.dataset.role = role;
      cell(tr, m.id);
      cell(tr, role + (m.leader ? " ★" : ""), "role");
      cell(tr, m.term);
      cell(tr, m.commit_index);
      cell(tr, m.applied_index);
      cell(tr, m.last_index);
      cell(tr, m.match_index);
      const lag = cell(tr, m.lag);
      if (typeof m.lag === "number" && m.lag > 0) {
        const bar = document.createElement("span");
        bar.className = "lagbar";
        bar.style.width = Math.min(100, Math.ceil(Math.log10(m.lag + 1) * 20)) + "px";
        lag.appendChild(bar);
      }
      cell(tr, m.entries_per_sec);
      cell(tr, m.replication);
      cell(tr, m.release, "release");
      cell(tr, m.api, "api");
      body.appendChild(tr);
    }
  }

  function renderTransfers(transfers) {
    const ul = $("transfers");
    while (ul.firstChild) ul.removeChild(ul.firstChild);
    if (!transfers.length) {
      const li = document.createElement("li");
      li.className = "none";
      li.textContent = "none running";
      ul.appendChild(li);
      return;
    }
    for (const t of transfers) {
      const li = document.createElement("li");
      const out = t.direction === "out";
      li.textContent =
        "node " + t.node + (out ? " → node " : " ← node ") + t.peer + ", index " + t.index;
      const bar = document.createElement("progress");
      bar.max = Math.max(1, t.total_bytes || 0);
      bar.value = t.done_bytes || 0;
      li.appendChild(bar);
      li.appendChild(
        document.createTextNode(
          Math.round((t.done_bytes || 0) / 1024) + " / " + Math.round((t.total_bytes || 0) / 1024) +
            " KiB, " + Math.round((t.bytes_per_sec || 0) / 1024) + " KiB/s"
        )
      );
      ul.appendChild(li);
    }
  }

  function renderTimeline(events) {
    const ol = $("timeline");
    while (ol.firstChild) ol.removeChild(ol.firstChild);
    for (const e of events.slice().reverse()) {
      const li = document.createElement("li");
      li.dataset.kind = e.kind;
      const time = document.createElement("time");
      time.textContent = new Date(e.at_unix_ms).toLocaleTimeString();
      li.appendChild(time);
      li.appendChild(document.createTextNode(e.text));
      ol.appendChild(li);
    }
  }

  function onCluster(s) {
    state.members = s.members || [];
    state.node = s.node;
    const leader = $("leader");
    leader.dataset.leader = s.leader === null || s.leader === undefined ? "" : String(s.leader);
    show(leader, s.leader === null ? "none" : s.leader);
    show($("term"), s.term);
    show($("commit"), s.commit_index);
    show($("cluster-version"), s.cluster_version);
    show($("node"), s.node);
    addPoint(s.point);
    const p = s.point || {};
    show($("rate"), p.entries_per_sec);
    show($("p50"), ms(p.latency_p50_ms));
    show($("p99"), ms(p.latency_p99_ms));
    chart($("chart-rate"), "entries_per_sec");
    chart($("chart-latency"), "latency_p99_ms");
    renderMembers(state.members);
    renderTransfers(s.transfers || []);
    renderTimeline(s.timeline || []);
  }

  function setConn(st, label) {
    const c = $("conn");
    c.dataset.state = st;
    c.textContent = label;
  }

  // This node stopped answering: go on with another member's dashboard, the leader's if
  // it is another node.
  function moveAway(es) {
    es.close();
    const others = state.members.filter(
      (m) => m.api && m.reachable && m.id !== state.node && m.api !== location.host
    );
    others.sort((a, b) => (b.leader ? 1 : 0) - (a.leader ? 1 : 0));
    if (!others.length) {
      setConn("lost", "lost: retrying");
      setTimeout(connect, 1000);
      return;
    }
    setConn("lost", "moving to node " + others[0].id);
    location.assign(location.protocol + "//" + others[0].api + "/ui");
  }

  // What this browser's cookie grants: {tokens, signed_in, name, role}; null if the node
  // cannot be asked.
  async function session() {
    try {
      const r = await fetch("/ui/session", { credentials: "same-origin" });
      return r.ok ? await r.json() : null;
    } catch (e) {
      return null;
    }
  }

  function showSession(s) {
    const signedIn = s && s.tokens && s.signed_in;
    $("signout").hidden = !signedIn;
    $("who").hidden = !signedIn;
    if (signedIn) $("who").textContent = (s.name || "") + " (" + s.role + ")";
  }

  function askToken(why) {
    showSession(null);
    $("signin").hidden = false;
    $("signin-why").textContent = why || "This cluster needs a token to be read.";
    setConn("lost", "signed out");
    $("signin-token").focus();
  }

  $("signin-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const token = $("signin-token").value;
    $("signin-token").value = "";
    let r;
    try {
      r = await fetch("/ui/session", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ token: token }),
      });
    } catch (e) {
      $("signin-why").textContent = "the node did not answer: " + e;
      return;
    }
    const body = await r.json().catch(() => ({}));
    if (!r.ok) {
      $("signin-why").textContent = (body.error && body.error.message) || "refused";
      return;
    }
    $("signin").hidden = true;
    showSession(body);
    connect();
  });

  $("signout").addEventListener("click", async () => {
    await fetch("/ui/session", { method: "DELETE", credentials: "same-origin" }).catch(() => {});
    if (state.es) state.es.close();
    askToken("Signed out.");
  });

  async function start() {
    const s = await session();
    if (s && s.tokens && !s.signed_in) {
      askToken();
      return;
    }
    showSession(s);
    connect();
  }

  function connect() {
    const es = new EventSource("/v1/events");
    state.es = es;
    es.addEventListener("history", (e) => {
      const h = JSON.parse(e.data);
      for (const p of h.points || []) addPoint(p);
      renderTimeline(h.timeline || []);
    });
    es.addEventListener("cluster", (e) => {
      state.failures = 0;
      setConn("live", "live");
      onCluster(JSON.parse(e.data));
    });
    es.addEventListener("closing", (e) => {
      const why = JSON.parse(e.data || "{}");
      if (why.reason === "lifetime") {
        // Only this stream's time is up: open a new one here.
        es.close();
        connect();
        return;
      }
      moveAway(es);
    });
    es.addEventListener("revoked", (e) => {
      es.close();
      askToken(JSON.parse(e.data || "{}").message);
    });
    es.onerror = async () => {
      state.failures += 1;
      setConn("lost", "connection lost");
      if (state.failures >= 2 || es.readyState === EventSource.CLOSED) {
        const s = await session();
        if (s && s.tokens && !s.signed_in) {
          es.close();
          askToken("The sign-in is no longer valid.");
          return;
        }
        moveAway(es);
      }
    };
  }

  start();
})();
