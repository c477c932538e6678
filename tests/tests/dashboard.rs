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
