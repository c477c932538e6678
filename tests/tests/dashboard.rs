//! The live dashboard in a real browser: headless Chromium loads `/ui` from a node and the
//! test reads what the page shows from its DOM, before and after the leader is killed.
//! Screenshots are kept in `target/test-artifacts/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::browser::{Browser, Page};
use common::Cluster;
use serde_json::Value;

/// What the page shows: the leader it names, and each member row's id and role.
const READ_PAGE: &str = r#"(() => {
  const leader = document.getElementById('leader');
  const rows = Array.from(document.querySelectorAll('#members tbody tr'))
    .map(r => ({ id: Number(r.dataset.memberId), role: r.dataset.role }));
  const named = leader ? leader.dataset.leader : '';
  const rate = Number((document.getElementById('rate') || {}).textContent);
  const charted = document.querySelector('#chart-rate polyline') !== null;
  return { leader: named === '' ? null : Number(named), rows, href: location.href, rate, charted };
})()"#;

fn role_of(shown: &Value, id: u64) -> Option<String> {
    shown["rows"]
        .as_array()?
        .iter()
        .find(|r| r["id"] == id)
        .and_then(|r| r["role"].as_str())
        .map(String::from)
}

/// Reads the page until `ok` holds of what it shows; what it showed then.
async fn wait_until(page: &mut Page, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Value::Null;
    loop {
        let shown = page.eval(READ_PAGE).await;
        if ok(&shown) {
            return shown;
        }
        if !shown.is_null() {
            last = shown;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed {what}; it last showed {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_every_member_and_the_new_leader_after_the_old_one_is_killed() {
    let mut c = Cluster::start(3).await;
    let old = c.leader().await;
    let old_id = c.status(old).await["id"].as_u64().unwrap();
    for i in 0..20 {
        let (ok, _) = c.post_entry(c.apis[old].clone(), &format!("e{i}")).await;
        assert!(ok, "write {i} failed");
    }

    // The page and its assets come from the node, with a policy that forbids anything else.
    for (path, kind) in [
        ("/ui", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        let r = c.http.get(c.url(old, path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .starts_with("default-src 'self'"),
            "{path}"
        );
    }

    let browser = Browser::launch();
    let mut page = browser.page().await;
    // Served by the leader, so that killing it also tests that the page moves on.
    page.navigate(&c.url(old, "/ui")).await;
    let shown = wait_until(&mut page, "three members and the leader", |v| {
        v["rows"].as_array().map(Vec::len) == Some(3)
            && v["leader"] == old_id
            && role_of(v, old_id).as_deref() == Some("leader")
    })
    .await;
    for id in 0..3u64 {
        assert!(
            role_of(&shown, id).is_some(),
            "member {id} is missing: {shown}"
        );
    }
    // Writes while the page is open: it shows their rate, and draws it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    loop {
        for _ in 0..20 {
            let (ok, _) = c.post_entry(c.apis[old].clone(), &format!("w{i}")).await;
            assert!(ok, "write w{i} failed");
            i += 1;
        }
        let shown = page.eval(READ_PAGE).await;
        if shown["rate"].as_f64().is_some_and(|r| r > 0.0) && shown["charted"] == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed the writes' rate: {shown}"
        );
    }
    let before = page.screenshot("dashboard-three-members.png").await;
    println!("screenshot: {}", before.display());

    c.kill(old);
    // The survivors name the old leader until one of them is elected.
    let deadline = Instant::now() + Duration::from_secs(30);
    let new = loop {
        let l = c.leader().await;
        if l != old {
            break l;
        }
        assert!(Instant::now() < deadline, "no new leader was elected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let new_id = c.status(new).await["id"].as_u64().unwrap();
    assert_ne!(new_id, old_id);
    let shown = wait_until(
        &mut page,
        "the new leader and the old one out of reach",
        |v| {
            v["leader"] == new_id
                && role_of(v, new_id).as_deref() == Some("leader")
                && role_of(v, old_id).as_deref() == Some("unreachable")
        },
    )
    .await;
    assert!(
        !shown["href"]
            .as_str()
            .unwrap_or_default()
            .contains(&c.apis[old]),
        "the page should have moved to a member that answers: {shown}"
    );
    let after = page.screenshot("dashboard-new-leader.png").await;
    println!("screenshot: {}", after.display());
}

/// Serves `html` to every request on a new loopback port (a site of its own: another
/// origin than any node's); its address.
async fn serve_page(html: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let html = html.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{html}",
                    html.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    addr
}

/// How many requests node `i` answered with `code` for `method route`.
async fn answered(c: &Cluster, i: usize, method: &str, route: &str, code: u16) -> u64 {
    let want = format!(
        "raft_http_requests_total{{route=\"{route}\",method=\"{method}\",code=\"{code}\"}} "
    );
    c.metrics_text(i)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(&want).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_another_site_cannot_make_a_browser_write_or_change_the_members() {
    // An open cluster: the browser needs no credential, only the origin checks protect it.
    let c = Cluster::start(1).await;
    let node = c.url(0, "");
    let attack = format!(
        r#"<!doctype html><html><body>
<form id="f" method="POST" action="{node}/v1/log" enctype="text/plain"><input name='{{"entry": "csrf-form", "x": "' value='"}}'></form>
<script>
fetch("{node}/v1/log", {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}}, body: '{{"entry": "csrf-fetch"}}'}});
fetch("{node}/v1/members", {{method: "POST", mode: "no-cors", body: '{{"id": 7, "raft": "127.0.0.1:9"}}'}});
setTimeout(() => document.getElementById("f").submit(), 300);
</script></body></html>"#
    );
    let site = serve_page(attack).await;
    let browser = Browser::launch();
    let mut page = browser.page().await;
    page.navigate(&format!("http://{site}/")).await;
    // The browser sent all three, and the node refused each.
    let deadline = Instant::now() + Duration::from_secs(30);
    while answered(&c, 0, "POST", "/v1/log", 403).await < 2
        || answered(&c, 0, "POST", "/v1/members", 403).await < 1
    {
        assert!(
            Instant::now() < deadline,
            "the browser's requests never arrived:\n{}",
            c.metrics_text(0).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = c.get_json(0, "/v1/log?from=1").await;
    assert!(!log.to_string().contains("csrf"), "{log}");
    let members = c.get_json(0, "/v1/members").await;
    assert_eq!(members.as_array().unwrap().len(), 1, "{members}");
}

/// What the page shows about signing in.
const READ_SIGN_IN: &str = r#"(() => ({
  asked: !document.getElementById('signin').hidden,
  why: document.getElementById('signin-why').textContent,
  who: document.getElementById('who').textContent,
  rows: document.querySelectorAll('#members tbody tr').length,
  unreachable: document.querySelectorAll('#members tbody tr[data-role="unreachable"]').length,
  cookie: document.cookie,
}))()"#;

async fn wait_sign_in(page: &mut Page, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let shown = page.eval(READ_SIGN_IN).await;
        if ok(&shown) {
            return shown;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed {what}; it showed {shown}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_asks_for_a_token_once_keeps_it_out_of_scripts_and_asks_again_once_revoked() {
    let mut c = Cluster::new(3, &[]);
    let t = c.enable_tokens();
    // Plain HTTP: each node reads the others' status for the page with a read token.
    let peer_token = c.dir.path().join("peer-token");
    std::fs::write(&peer_token, &t.read).unwrap();
    for i in 0..3 {
        c.push_node_args(
            i,
            &["--peer-api-token-file", &peer_token.display().to_string()],
        );
    }
    c.launch().await;
    let l = c.leader().await;
    let browser = Browser::launch();
    let mut page = browser.page().await;
    page.navigate(&c.url(l, "/ui")).await;
    wait_sign_in(&mut page, "the sign-in", |v| v["asked"] == true).await;
    // A wrong token is refused, and said so.
    let enter = |token: &str| {
        format!(
            "(() => {{ document.getElementById('signin-token').value = {}; document.getElementById('signin-form').requestSubmit(); return true; }})()",
            serde_json::to_string(token).unwrap()
        )
    };
    page.eval(&enter("rt_wrong")).await;
    wait_sign_in(&mut page, "the refusal", |v| {
        v["why"].as_str().unwrap_or("").contains("not known")
    })
    .await;
    page.eval(&enter(&t.write)).await;
    let shown = wait_sign_in(&mut page, "every member reachable once signed in", |v| {
        v["asked"] == false && v["rows"] == 3 && v["unreachable"] == 0
    })
    .await;
    assert!(shown["who"].as_str().unwrap().contains("writer"), "{shown}");
    // The cookie holds the token, and no script of any page can read it.
    assert!(
        !shown["cookie"].as_str().unwrap().contains("raft_token"),
        "{shown}"
    );
    // A reload does not ask again.
    page.navigate(&c.url(l, "/ui")).await;
    wait_sign_in(&mut page, "the members after a reload", |v| {
        v["asked"] == false && v["rows"] == 3
    })
    .await;
    // The token is revoked: the page's stream ends and it asks for a token again.
    common::run_ok(
        std::process::Command::new(common::binary())
            .args(["tokens", "remove", "writer", "--file"])
            .arg(&t.file),
    );
    for i in 0..3 {
        c.signal(i, "HUP");
    }
    let shown = wait_sign_in(&mut page, "the sign-in after the revocation", |v| {
        v["asked"] == true
    })
    .await;
    assert!(
        shown["why"].as_str().unwrap().contains("revoked"),
        "{shown}"
    );
    let signed_out = page.screenshot("dashboard-sign-in.png").await;
    println!("screenshot: {}", signed_out.display());
}
