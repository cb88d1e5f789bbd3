//! The `read_bytes_per_sec` knob: reading an upload's body no faster than a given rate.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use futures_util::StreamExt;

/// Pauses this many times a second at most, so slow rates still advance smoothly.
const STEPS_PER_SEC: u64 = 10;

/// The request with its body read no faster than `bytes_per_sec` (0: unchanged).
pub(super) fn throttled(request: Request, bytes_per_sec: u64) -> Request {
    if bytes_per_sec == 0 {
        return request;
    }
    let (parts, body) = request.into_parts();
    Request::from_parts(parts, slow_body(body, bytes_per_sec))
}

/// Hands on the body in slices of a tenth of the rate, sleeping after each
/// for as long as the rate allows, so no burst ever runs ahead of it.
fn slow_body(body: Body, bytes_per_sec: u64) -> Body {
    let slice = usize::try_from(bytes_per_sec / STEPS_PER_SEC)
        .unwrap_or(usize::MAX)
        .max(1);
    let start = (body.into_data_stream(), Bytes::new());
    let stream = futures_util::stream::unfold(start, move |(mut stream, mut pending)| async move {
        if pending.is_empty() {
            match stream.next().await? {
                Ok(chunk) => pending = chunk,
                Err(e) => return Some((Err(e), (stream, pending))),
            }
        }
        let piece = pending.split_to(pending.len().min(slice));
        let pause = Duration::from_secs_f64(piece.len() as f64 / bytes_per_sec as f64);
        tokio::time::sleep(pause).await;
        Some((Ok(piece), (stream, pending)))
    });
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn reads_no_faster_than_the_rate() {
        let body = Body::from(vec![1u8; 1000]);
        let started = Instant::now();
        let read = axum::body::to_bytes(slow_body(body, 250), usize::MAX)
            .await
            .unwrap();
        assert_eq!(read.len(), 1000);
        assert!(started.elapsed() >= Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_is_unlimited() {
        let request = Request::new(Body::from(vec![1u8; 1000]));
        let started = Instant::now();
        let body = throttled(request, 0).into_body();
        let read = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        assert_eq!(read.len(), 1000);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
