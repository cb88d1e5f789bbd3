//! The console's chart of the last hour: uploads per minute as bars, the backlog as a line, drawn as inline SVG (no script, no library).

use std::fmt::Write;

use crate::metrics::{Minute, HISTORY_MINUTES};

const WIDTH: u64 = 600;
const HEIGHT: u64 = 120;

/// The chart of `series` (oldest first, one entry per minute), with a text
/// alternative that says the same for screen readers.
pub fn chart(series: &[Minute]) -> String {
    let max_uploads = series.iter().map(|m| m.uploads).max().unwrap_or(0).max(1);
    let max_backlog = series.iter().map(|m| m.backlog).max().unwrap_or(0).max(1);
    let total: u64 = series.iter().map(|m| m.uploads).sum();
    let backlog_now = series.last().map_or(0, |m| m.backlog_end);
    let slot = WIDTH / HISTORY_MINUTES;
    // The newest minute sits at the right edge, whatever the uptime.
    let offset = HISTORY_MINUTES.saturating_sub(series.len() as u64) * slot;
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" preserveAspectRatio=\"none\" \
         role=\"img\" aria-labelledby=\"chart-title\"><title id=\"chart-title\">Last hour: \
         {total} uploads (at most {max_uploads} in a minute); backlog now {backlog_now}, \
         at most {max_backlog}</title>"
    );
    for (i, m) in series.iter().enumerate() {
        if m.uploads == 0 {
            continue;
        }
        let h = (m.uploads * (HEIGHT - 4) / max_uploads).max(1);
        let _ = write!(
            svg,
            "<rect class=\"bar\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{h}\"></rect>",
            offset + i as u64 * slot,
            HEIGHT - h,
            slot.saturating_sub(1).max(1),
        );
    }
    let points: Vec<String> = series
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let x = offset + i as u64 * slot + slot / 2;
            let y = HEIGHT - 2 - m.backlog * (HEIGHT - 4) / max_backlog;
            format!("{x},{y}")
        })
        .collect();
    let _ = write!(
        svg,
        "<polyline class=\"backlog\" points=\"{}\"></polyline></svg>",
        points.join(" ")
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minute(minute: u64, uploads: u64, backlog: u64) -> Minute {
        Minute {
            minute,
            uploads,
            backlog,
            backlog_end: backlog,
        }
    }

    #[test]
    fn bars_are_scaled_to_the_busiest_minute_and_the_newest_is_on_the_right() {
        let series = [minute(0, 2, 10), minute(1, 0, 5), minute(2, 4, 0)];
        let svg = chart(&series);
        assert_eq!(svg.matches("<rect").count(), 2, "a quiet minute has no bar");
        // 60 slots of 10 px; three minutes so far fill the last three.
        assert!(
            svg.contains("x=\"590\" y=\"4\" width=\"9\" height=\"116\""),
            "{svg}"
        );
        assert!(
            svg.contains("x=\"570\" y=\"62\" width=\"9\" height=\"58\""),
            "{svg}"
        );
        assert!(svg.contains("points=\"575,2 585,60 595,118\""), "{svg}");
        assert!(svg.contains("6 uploads (at most 4 in a minute); backlog now 0, at most 10"));
        assert!(
            !svg.contains("http"),
            "no namespace or link: inline in HTML"
        );
    }

    #[test]
    fn an_idle_hour_draws_no_bars_and_divides_by_nothing() {
        let series: Vec<Minute> = (0..HISTORY_MINUTES).map(|m| minute(m, 0, 0)).collect();
        let svg = chart(&series);
        assert!(!svg.contains("<rect"));
        assert!(svg.contains("points=\"5,118 "), "{svg}");
        assert!(chart(&[]).contains("0 uploads"));
    }
}
