//! The browser app, embedded at build time from `web/` and served over HTTP.
//!
//! `GET /` is `index.html`, `GET /NAME` is `web/NAME`. With the environment variable
//! `PEERLINK_WEB_DIR` set, files are read from that folder on every request instead (for
//! working on the app without rebuilding).

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::borrow::Cow;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/web_files.rs"));
}

/// No inline script, nothing from elsewhere: the app works on a LAN with no internet, and
/// a name or chat message can never become markup that runs.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
    media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    frame-ancestors 'none'; form-action 'self'";

/// Routes for the app's files.
pub fn router() -> Router {
    Router::new()
        .route("/", get(|| file("index.html")))
        .route("/{name}", get(|Path(name): Path<String>| file_owned(name)))
}

/// Names of the embedded files (for tests and logs).
pub fn embedded_files() -> impl Iterator<Item = &'static str> {
    embedded::FILES.iter().map(|(name, _)| *name)
}

async fn file_owned(name: String) -> Response {
    file(&name).await
}

async fn file(name: &str) -> Response {
    let Some(body) = lookup(name) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type(name))),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::HeaderName::from_static("permissions-policy"),
            HeaderValue::from_static("camera=(self), microphone=(self)"),
        ),
    ];
    match body {
        Cow::Borrowed(bytes) => (headers, bytes).into_response(),
        Cow::Owned(bytes) => (headers, bytes).into_response(),
    }
}

fn lookup(name: &str) -> Option<Cow<'static, [u8]>> {
    // Flat names only: nothing that could climb out of the folder.
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\']) {
        return None;
    }
    if let Some(dir) = std::env::var_os("PEERLINK_WEB_DIR") {
        return std::fs::read(std::path::Path::new(&dir).join(name)).ok().map(Cow::Owned);
    }
    embedded::FILES.iter().find(|(n, _)| *n == name).map(|(_, bytes)| Cow::Borrowed(*bytes))
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") | Some("webmanifest") => "application/json",
        Some("md") | Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeds_the_app() {
        let names: Vec<_> = embedded_files().collect();
        assert!(names.contains(&"index.html"), "{names:?}");
        assert!(names.iter().any(|n| n.ends_with(".js")), "{names:?}");
    }

    #[test]
    fn refuses_paths_outside_the_folder() {
        for bad in ["", ".", "..", "../Cargo.toml", "a/b", "..\\x", ".hidden"] {
            assert!(lookup(bad).is_none(), "{bad:?}");
        }
        assert!(lookup("index.html").is_some());
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("x"), "application/octet-stream");
    }
}
