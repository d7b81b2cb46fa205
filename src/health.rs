//! `/healthz` (the process is alive) and `/readyz` (it can route: the org
//! table has had a complete load and shutdown has not begun).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;

use crate::app::App;

pub async fn alive() -> &'static str {
    "ok\n"
}

pub async fn ready(State(app): State<Arc<App>>) -> (StatusCode, String) {
    match app.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}
