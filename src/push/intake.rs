//! Receiving a push body: frame by frame against the memory budget and
//! the body timeout, and undoing a `Content-Encoding` layer around it.
//!
//! ```text
//!  body frames ─► charged to the byte budget as they arrive (503 when full; stalled bodies
//!                 give way under pressure), within limits.body_timeout (503), at most
//!                 max_body_bytes (413)
//!  gzip / deflate layer ─► charged at what it can expand to ─► inflated (400 if corrupt)
//! ```

use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Body as _;

use super::refusal::{reject, stalled_under_pressure, too_large_body, too_slow, Refusal};
use crate::app::App;
use crate::codec::Codec;
use crate::limits::Charge;

/// How long a request waits for room in a full budget (while stalled
/// requests are made to let go) before it is told to retry.
pub(super) const ROOM_WAIT: Duration = Duration::from_millis(500);

/// A body that made no progress for this long gives up its bytes when
/// another request needs room.
const STALLED: Duration = Duration::from_millis(250);

/// Reads the body frame by frame, charging each frame to the budget before
/// keeping it, within `limits.body_timeout` of now.
pub(super) async fn receive(
    app: &App,
    mut body: Body,
    charge: &mut Charge,
) -> Result<Bytes, Refusal> {
    let limits = app.limits();
    let deadline = tokio::time::Instant::now() + limits.body_timeout;
    // Each frame is copied out at once, so hyper's buffers are reused and
    // what the request holds is exactly what was charged. With a declared
    // length the buffer is reserved up front (pages become resident only
    // as they are written); chunked bodies grow it.
    let received = match body.size_hint().exact() {
        Some(len) => {
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            charge.expect(len);
            app.pool().take(len.min(limits.max_body_bytes))
        }
        // A chunked body may be as large as allowed.
        None => {
            charge.expect(limits.max_body_bytes);
            Vec::new()
        }
    };
    // Back to the pool however this ends.
    let mut received = crate::pool::Pooled::new(received, app.pool().clone());
    loop {
        let last_progress = tokio::time::Instant::now();
        let held = received.as_ref().len();
        // Resolves when another request needs room while this body is
        // stalled (holding bytes, nothing new for `STALLED`).
        let yield_to_others = async {
            loop {
                app.budget().pressure().await;
                if last_progress.elapsed() >= STALLED && held > 0 {
                    return;
                }
            }
        };
        let next = tokio::select! {
            next = tokio::time::timeout_at(deadline, body.frame()) => next,
            () = yield_to_others => return Err(stalled_under_pressure()),
        };
        let frame = match next {
            Err(_) => return Err(too_slow(limits.body_timeout)),
            Ok(None) => break,
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(e))) => {
                return Err(reject(
                    StatusCode::BAD_REQUEST,
                    "read",
                    format!("reading the request body failed: {e}"),
                ))
            }
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if received.as_ref().len() + data.len() > limits.max_body_bytes {
            return Err(too_large_body(limits.max_body_bytes));
        }
        // Charged by what is written: reserved pages that were never
        // written are not resident (buffers this large are mmap'd).
        if !charge.grow(data.len(), false, ROOM_WAIT).await {
            return Err(Refusal::Overloaded("bytes"));
        }
        received.extend_from_slice(&data);
    }
    Ok(received.into_bytes())
}

/// Undoes a gzip or deflate `Content-Encoding` around a snappy protobuf
/// Loki push, as Loki does (every gzip member, as Go's reader reads them).
/// What it holds is bounded like any received body, by
/// `limits.max_body_bytes`, and charged to the memory budget before it is
/// inflated. Tenant pushes then go to Loki as plain snappy protobuf.
pub(super) async fn undo_content_encoding(
    app: &App,
    codec: Codec,
    body: Bytes,
    charge: &mut Charge,
) -> Result<Bytes, Refusal> {
    let limit = app.limits().max_body_bytes;
    // Charged at the most the layer can expand to (deflate's bound, 1032
    // to 1), so a small body does not reserve the whole limit.
    let most = limit.min(body.len().saturating_mul(crate::codec::DEFLATE_MAX_RATIO));
    charge.expect(body.len().saturating_add(most));
    if !charge.grow(most, true, ROOM_WAIT).await {
        return Err(Refusal::Overloaded("bytes"));
    }
    // Small bodies inflate inline; large ones off the runtime.
    let inflated = if body.len() < 64 << 10 {
        crate::codec::inflate_layer(codec, &body, most)
    } else {
        tokio::task::spawn_blocking(move || crate::codec::inflate_layer(codec, &body, most))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
    };
    let inner = inflated.map_err(|e| {
        let name = codec.content_encoding().unwrap_or("deflate");
        reject(
            StatusCode::BAD_REQUEST,
            "bad_encoding",
            format!("body is not valid {name}: {e}"),
        )
    })?;
    if inner.len() > limit {
        return Err(too_large_body(limit));
    }
    if inner.len() > most {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "bad_encoding",
            "body expands beyond what deflate can encode",
        ));
    }
    if inner.is_empty() {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "empty",
            "empty request body",
        ));
    }
    charge.shrink_to(inner.len());
    Ok(Bytes::from(inner))
}
