//! `/events`: the dashboard's sections as server-sent events, sent when they change (looked at every second).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};

use super::console::Console;
use super::page::sections_json;

/// How often the figures are looked at for a change.
pub const EVERY: Duration = Duration::from_secs(1);

pub async fn events(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let can_act = console.carried(&headers, None);
    if console.public && !can_act {
        return (StatusCode::FORBIDDEN, "the console's token is needed\n").into_response();
    }
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream = futures_util::stream::unfold(
        (console, None::<String>, tick),
        move |(console, last, mut tick)| async move {
            loop {
                tick.tick().await;
                let snapshot = console.sources.snapshot().await;
                let data = sections_json(&snapshot, console.view(can_act)).to_string();
                if last.as_deref() != Some(data.as_str()) {
                    let event = Event::default().event("state").data(data.clone());
                    return Some((Ok::<_, Infallible>(event), (console, Some(data), tick)));
                }
            }
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
