//! The console's stylesheet and script, compiled into the binary: no CDN, nothing fetched.

use axum::http::header;
use axum::response::IntoResponse;

const CSS: &str = include_str!("static/console.css");
const JS: &str = include_str!("static/console.js");

pub(crate) async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        CSS,
    )
}

pub(crate) async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        JS,
    )
}
