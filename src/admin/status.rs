//! `GET /status`: a small HTML page for people watching a peak: the queue
//! in total and per domain, the mail at the egress paths and their
//! sending rates by provider, by source and by path (site), the automatic
//! actions and suspensions in force, and the rebinds. Server-rendered, no external
//! assets, refreshing itself every five seconds. Every value shown is
//! HTML-escaped.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::response::Html;

use super::AdminState;
use super::types::{PathRow, QueueRow};

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}\
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.2em 0 .4em}\
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6em 1em;min-width:9em}\
.card b{display:block;font-size:1.6em}table{border-collapse:collapse;background:#fff;min-width:30em}\
td,th{border:1px solid #ddd;padding:.3em .6em;text-align:left}th{background:#f0f0f0}td.n{text-align:right}\
.muted{color:#777}.warn{color:#a40}";

#[utoipa::path(operation_id = "status_page", get, path = "/status", tag = "daemon", responses((status = 200, description = "The status page (HTML, refreshing itself)", content_type = "text/html")))]
pub(super) async fn page(State(s): State<Arc<AdminState>>) -> Html<String> {
    let stats = s.queue.stats();
    let mut domains = s.queue.domains();
    domains.sort_by_key(|d| std::cmp::Reverse(d.recipients));
    let mut h = String::with_capacity(8 << 10);
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
         <title>Tern status</title><style>{STYLE}</style></head><body>\
         <h1>Tern on {}</h1><div class=\"muted\">up since {} &middot; refreshes every 5 s</div>",
        esc(&s.hostname),
        esc(&crate::clock::rfc3339(s.started))
    );
    let health = match crate::views::spool_state(&s.queue.health()) {
        (state, Some(why)) => format!("{state}: {why}"),
        (_, None) if s.queue.is_recovering() => "recovering the spool".to_owned(),
        (state, None) => state.to_owned(),
    };
    let paths = s.delivery.paths();
    let dests = s.delivery.destinations();
    let oldest = crate::views::oldest_waiting_secs(&dests, &paths);
    let _ = write!(
        h,
        "<h2>Queue</h2><div class=\"cards\"><div class=\"card\">messages<b>{}</b></div>\
         <div class=\"card\">recipients<b>{}</b></div><div class=\"card\">spool<b>{}</b></div>\
         <div class=\"card\">held<b>{}</b></div>\
         <div class=\"card\">oldest waiting<b>{} s</b></div>\
         <div class=\"card\">health<b>{}</b></div></div>",
        stats.messages,
        stats.recipients,
        crate::views::human_bytes(stats.disk_bytes),
        stats.held,
        oldest,
        esc(&health)
    );
    trend_section(&mut h, s.metrics.trend());
    h.push_str("<h2>Queued by domain</h2><table><tr><th>domain</th><th>recipients</th><th>messages</th></tr>");
    for d in domains.iter().take(25) {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&d.domain),
            d.recipients,
            d.messages
        );
    }
    if domains.is_empty() {
        h.push_str("<tr><td colspan=\"3\" class=\"muted\">nothing queued</td></tr>");
    }
    h.push_str("</table>");
    destinations_table(&mut h, &dests);
    paths_tables(&mut h, &paths);
    rebinds_table(&mut h, &s);
    h.push_str("<h2>Suspensions and automatic actions</h2><table><tr><th>target</th><th>by</th><th>until</th><th>after</th></tr>");
    let actions = s.shaper.actions.list();
    for a in &actions {
        let until = a
            .rate
            .as_deref()
            .map_or(a.end.clone(), |r| format!("slowed to {r}"));
        let _ = write!(
            h,
            "<tr><td class=\"warn\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&a.target.to_string()),
            esc(&a.rule),
            esc(&until),
            esc(&a.reply)
        );
    }
    if actions.is_empty() {
        h.push_str("<tr><td colspan=\"4\" class=\"muted\">none in force</td></tr>");
    }
    h.push_str("</table><p class=\"muted\">Metrics: <a href=\"/metrics\">/metrics</a> &middot; API: <a href=\"/v1/openapi.json\">/v1/openapi.json</a></p></body></html>");
    Html(h)
}

/// The series' names and colours, in [`crate::metrics::trend::Series`]
/// order.
const SERIES: [(&str, &str); 4] = [
    ("accepted", "#2a6"),
    ("delivered", "#26a"),
    ("deferred", "#c80"),
    ("bounced", "#c33"),
];

/// Rates over the last 1, 5 and 15 minutes, and a chart of the last hour
/// (inline SVG, no external assets).
fn trend_section(h: &mut String, t: &crate::metrics::trend::Trend) {
    let windows = [60, 300, 900].map(|w| t.rates(w));
    h.push_str("<h2>Rates (per second)</h2><table><tr><th>what</th><th>last minute</th><th>5 minutes</th><th>15 minutes</th></tr>");
    for (i, (name, colour)) in SERIES.iter().enumerate() {
        let _ = write!(
            h,
            "<tr><td style=\"color:{colour}\">{name}</td><td class=\"n\">{:.1}</td><td class=\"n\">{:.1}</td><td class=\"n\">{:.1}</td></tr>",
            windows[0][i], windows[1][i], windows[2][i]
        );
    }
    h.push_str("</table>");
    let steps = t.steps();
    if steps.len() < 2 {
        h.push_str("<p class=\"muted\">The chart of the last hour starts after two samples (10 s apart).</p>");
        return;
    }
    let (w, ht) = (720.0, 120.0);
    let top = steps
        .iter()
        .flat_map(|(_, r)| r.iter().copied())
        .fold(1.0_f64, f64::max);
    let x = |k: usize| k as f64 * w / (steps.len() - 1) as f64;
    let _ = write!(
        h,
        "<p class=\"muted\">The last hour, 10 s steps; top of the chart {top:.0}/s.</p><svg width=\"{w}\" height=\"{ht}\" viewBox=\"0 0 {w} {ht}\" style=\"background:#fff;border:1px solid #ddd\">"
    );
    for (i, (name, colour)) in SERIES.iter().enumerate() {
        let points: Vec<String> = (steps.iter().enumerate())
            .map(|(k, (_, r))| format!("{:.1},{:.1}", x(k), ht - r[i] / top * (ht - 4.0)))
            .collect();
        let _ = write!(
            h,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"><title>{name}</title></polyline>",
            points.join(" ")
        );
    }
    h.push_str("</svg>");
}

/// The paths' rows summed by a key, busiest first.
fn sum_by(paths: &[PathRow], key: impl Fn(&PathRow) -> String) -> Vec<QueueRow> {
    let mut rows = super::queue::by_path(paths, key);
    rows.sort_by(|a, b| {
        (b.sent_last_minute, b.messages)
            .cmp(&(a.sent_last_minute, a.messages))
            .then_with(|| a.key.cmp(&b.key))
    });
    rows
}

/// Rates by provider and by source, and the busiest paths.
fn paths_tables(h: &mut String, paths: &[PathRow]) {
    let head = "<tr><th>{}</th><th>sent / min</th><th>connections</th><th>waiting</th></tr>";
    for (title, col, rows) in [
        (
            "Sending by provider",
            "provider",
            sum_by(paths, |p| {
                p.provider.clone().unwrap_or_else(|| "other".into())
            }),
        ),
        (
            "Sending by source",
            "source",
            sum_by(paths, |p| p.source.clone()),
        ),
    ] {
        let _ = write!(h, "<h2>{title}</h2><table>{}", head.replace("{}", col));
        for r in &rows {
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&r.key),
                r.sent_last_minute,
                r.connections,
                r.messages
            );
        }
        if rows.is_empty() {
            h.push_str("<tr><td colspan=\"4\" class=\"muted\">no mail on the way</td></tr>");
        }
        h.push_str("</table>");
    }
    h.push_str("<h2>Busiest paths (source to site)</h2><table><tr><th>source</th><th>site</th><th>sent / min</th><th>connections</th><th>waiting</th><th>oldest</th><th>held</th></tr>");
    for p in paths.iter().take(25) {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{} s</td><td class=\"warn\">{}</td></tr>",
            esc(&p.source),
            esc(&p.site),
            p.sent_last_minute,
            p.connections,
            p.waiting,
            p.oldest_secs,
            p.held.as_deref().map(esc).unwrap_or_default()
        );
    }
    if paths.is_empty() {
        h.push_str("<tr><td colspan=\"7\" class=\"muted\">no path open</td></tr>");
    }
    h.push_str("</table>");
}

/// Each destination's mail: scheduled (waiting for room, metadata only),
/// ready at its paths, being sent, and why it waits.
fn destinations_table(h: &mut String, dests: &[crate::views::DestRow]) {
    h.push_str("<h2>Destinations (scheduled, ready, sending)</h2><table><tr><th>site</th><th>pool</th><th>scheduled</th><th>ready</th><th>sending</th><th>oldest</th><th>waiting for</th></tr>");
    for d in dests.iter().take(25) {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{} s</td><td class=\"warn\">{}</td></tr>",
            esc(&d.site),
            esc(&d.pool),
            d.scheduled,
            d.ready,
            d.sending,
            d.oldest_secs,
            esc(d.held.as_deref().unwrap_or(""))
        );
    }
    if dests.is_empty() {
        h.push_str("<tr><td colspan=\"7\" class=\"muted\">nothing waiting</td></tr>");
    }
    h.push_str("</table>");
}

/// The rebinds in force.
fn rebinds_table(h: &mut String, s: &AdminState) {
    let rebinds = s.delivery.settings().rebinds.list(s.clock.system_time());
    if rebinds.is_empty() {
        return;
    }
    h.push_str("<h2>Rebinds</h2><table><tr><th>id</th><th>mail</th><th>to</th><th>why</th></tr>");
    for r in &rebinds {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            r.id,
            esc(&serde_json::to_string(&r.filter).unwrap_or_default()),
            esc(&r.destination()),
            esc(&r.reason)
        );
    }
    h.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn values_are_escaped() {
        assert_eq!(esc("<script>&'\""), "&lt;script&gt;&amp;&#39;&quot;");
    }
}
