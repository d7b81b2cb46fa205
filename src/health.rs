//! `/healthz` (the process is alive) and `/readyz` (it can route: the org
//! table has had a complete load and shutdown has not begun).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;

use crate::server::App;

pub async fn alive() -> &'static str {
    "ok\n"
}

pub async fn ready(State(app): State<Arc<App>>) -> (StatusCode, &'static str) {
    if app.shutting_down.load(Ordering::Acquire) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else if !app.table.is_synced() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "namespace table not loaded yet\n",
        )
    } else {
        (StatusCode::OK, "ready\n")
    }
}
