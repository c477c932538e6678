//! The dashboard's static assets, embedded in the binary: the page loads nothing from
//! anywhere but the node that serves it (a content security policy says so to the browser).

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// Only this node's own assets and its `/v1/events` stream; no inline script, no frames.
const CSP: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// `GET /ui` → the dashboard page.
#[utoipa::path(get, operation_id = "dashboard", path = "/ui", tag = "dashboard", responses((status = 200, description = "The dashboard page", content_type = "text/html")))]
pub(crate) async fn index() -> Response {
    asset("text/html; charset=utf-8", include_str!("ui/index.html"))
}

/// `GET /ui/` → the dashboard page.
#[utoipa::path(get, operation_id = "dashboard_slash", path = "/ui/", tag = "dashboard", responses((status = 200, description = "The dashboard page", content_type = "text/html")))]
pub(crate) async fn index_slash() -> Response {
    index().await
}

/// `GET /ui/app.js` → the page's script.
#[utoipa::path(get, operation_id = "dashboard_script", path = "/ui/app.js", tag = "dashboard", responses((status = 200, description = "The page's script", content_type = "text/javascript")))]
pub(crate) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("ui/app.js"))
}

/// `GET /ui/style.css` → the page's style sheet.
#[utoipa::path(get, operation_id = "dashboard_style", path = "/ui/style.css", tag = "dashboard", responses((status = 200, description = "The page's style sheet", content_type = "text/css")))]
pub(crate) async fn style() -> Response {
    asset("text/css; charset=utf-8", include_str!("ui/style.css"))
}

#[cfg(test)]
mod tests {
    const ASSETS: [(&str, &str); 3] = [
        ("index.html", include_str!("ui/index.html")),
        ("app.js", include_str!("ui/app.js")),
        ("style.css", include_str!("ui/style.css")),
    ];

    #[test]
    fn the_page_names_no_other_host() {
        for (name, text) in ASSETS {
            let outside = text
                .replace("http://www.w3.org/2000/svg", "")
                .matches("://")
                .count();
            assert_eq!(outside, 0, "{name} names an address on another host");
        }
    }

    #[test]
    fn the_page_loads_only_its_own_assets_and_stream() {
        let page = ASSETS[0].1;
        for attr in ["src=\"", "href=\""] {
            for (i, _) in page.match_indices(attr) {
                let target = &page[i + attr.len()..];
                assert!(
                    target.starts_with("/ui/"),
                    "index.html loads {}",
                    &target[..target.find('"').unwrap_or(target.len())]
                );
            }
        }
        assert!(ASSETS[1].1.contains("new EventSource(\"/v1/events\")"));
    }
}
