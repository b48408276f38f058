//! Latency reports: a text summary and an SVG latency-percentile chart (the HdrHistogram
//! "percentile distribution" plot: x is the percentile on a log scale of 1/(1-q), y the latency).

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// Percentiles shown in summaries.
pub const SUMMARY_PERCENTILES: [(f64, &str); 4] = [
    (50.0, "p50"),
    (99.0, "p99"),
    (99.9, "p99.9"),
    (100.0, "max"),
];

/// `p50 12.3  p99 45.6  p99.9 78.9  max 123.4` (microseconds).
///
/// ```
/// let mut h = ringwait::metrics::latency_histogram();
/// h.saturating_record(2_000);
/// assert_eq!(ringwait::report::percentile_line(&h), "p50 2.0  p99 2.0  p99.9 2.0  max 2.0");
/// ```
pub fn percentile_line(h: &Histogram<u64>) -> String {
    let mut s = String::new();
    for (i, (q, name)) in SUMMARY_PERCENTILES.iter().enumerate() {
        let v = if *q >= 100.0 {
            h.max()
        } else {
            h.value_at_percentile(*q)
        };
        if i > 0 {
            s.push_str("  ");
        }
        let _ = write!(s, "{name} {:.1}", v as f64 / 1_000.0);
    }
    s
}

/// One line of a chart: a name and its latency histogram (nanoseconds).
pub struct Series<'a> {
    /// Legend text.
    pub name: &'a str,
    /// The latencies.
    pub histogram: &'a Histogram<u64>,
}

const W: f64 = 760.0;
const H: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 50.0;
/// The chart spans percentiles up to 1 - 10^-MAX_NINES.
const MAX_NINES: f64 = 5.0;
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// An SVG latency-percentile chart of the series, with `notes` (e.g. the summary) under the
/// title.
///
/// ```
/// let mut h = ringwait::metrics::latency_histogram();
/// for v in 1..1000u64 { h.saturating_record(v * 1_000); }
/// let svg = ringwait::report::percentile_chart("latency", &[ringwait::report::Series { name: "a", histogram: &h }], &[]);
/// assert!(svg.starts_with("<svg") && svg.contains("polyline"));
/// ```
pub fn percentile_chart(title: &str, series: &[Series<'_>], notes: &[String]) -> String {
    let max_us = series
        .iter()
        .map(|s| s.histogram.max() as f64 / 1_000.0)
        .fold(0.0f64, f64::max)
        .max(0.001);
    let y_top = nice_ceiling(max_us);
    let x_of = |nines: f64| LEFT + (W - LEFT - RIGHT) * (nines / MAX_NINES);
    let y_of = |us: f64| TOP + (H - TOP - BOTTOM) * (1.0 - (us / y_top).min(1.0));
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{}" font-family="sans-serif" font-size="12">"#,
        H + 18.0 * notes.len() as f64 + 10.0
    );
    let _ = write!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = write!(
        svg,
        r#"<text x="{LEFT}" y="18" font-size="14" font-weight="bold">{}</text>"#,
        escape(title)
    );
    axes(&mut svg, y_top, &x_of, &y_of);
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut points = String::new();
        let steps = 200;
        for k in 0..=steps {
            let nines = MAX_NINES * k as f64 / steps as f64;
            let q = 100.0 * (1.0 - 10f64.powf(-nines));
            let us = s.histogram.value_at_percentile(q) as f64 / 1_000.0;
            let _ = write!(points, "{:.1},{:.1} ", x_of(nines), y_of(us));
        }
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            points.trim_end()
        );
        let ly = TOP + 16.0 * (i as f64 + 1.0);
        let _ = write!(
            svg,
            r#"<line x1="{:.0}" y1="{ly}" x2="{:.0}" y2="{ly}" stroke="{colour}" stroke-width="3"/><text x="{:.0}" y="{:.0}">{}</text>"#,
            LEFT + 10.0,
            LEFT + 30.0,
            LEFT + 36.0,
            ly + 4.0,
            escape(s.name)
        );
    }
    for (i, note) in notes.iter().enumerate() {
        let _ = write!(
            svg,
            r#"<text x="{LEFT}" y="{:.0}" font-family="monospace">{}</text>"#,
            H + 18.0 * (i as f64 + 1.0) - 4.0,
            escape(note)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn axes(svg: &mut String, y_top: f64, x_of: &dyn Fn(f64) -> f64, y_of: &dyn Fn(f64) -> f64) {
    let (x0, x1, y0, y1) = (x_of(0.0), x_of(MAX_NINES), y_of(0.0), y_of(y_top));
    let _ = write!(
        svg,
        r##"<path d="M{x0},{y1} L{x0},{y0} L{x1},{y0}" stroke="#333" fill="none"/>"##
    );
    for (nines, label) in [
        (0.0, "0%"),
        (1.0, "90%"),
        (2.0, "99%"),
        (3.0, "99.9%"),
        (4.0, "99.99%"),
        (5.0, "99.999%"),
    ] {
        let x = x_of(nines);
        let _ = write!(
            svg,
            r##"<line x1="{x}" y1="{y1}" x2="{x}" y2="{y0}" stroke="#ddd"/><text x="{x}" y="{}" text-anchor="middle">{label}</text>"##,
            y0 + 16.0
        );
    }
    for k in 0..=5 {
        let us = y_top * k as f64 / 5.0;
        let y = y_of(us);
        let _ = write!(
            svg,
            r##"<line x1="{x0}" y1="{y}" x2="{x1}" y2="{y}" stroke="#eee"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            x0 - 6.0,
            y + 4.0,
            format_us(us)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text><text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">latency (µs)</text>"#,
        (x0 + x1) / 2.0,
        y0 + 34.0,
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0
    );
}

fn format_us(us: f64) -> String {
    if us >= 100.0 || us == 0.0 {
        format!("{us:.0}")
    } else if us >= 1.0 {
        format!("{us:.1}")
    } else {
        format!("{us:.3}")
    }
}

/// The smallest 1, 2 or 5 times a power of ten at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= v {
            return m * p;
        }
    }
    10.0 * p
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.7), 1.0);
        assert_eq!(nice_ceiling(1.3), 2.0);
        assert_eq!(nice_ceiling(420.0), 500.0);
        assert_eq!(nice_ceiling(5000.0), 5000.0);
    }

    #[test]
    fn chart_has_one_polyline_per_series_and_escapes_text() {
        let mut a = crate::metrics::latency_histogram();
        let mut b = crate::metrics::latency_histogram();
        for v in 1..100 {
            a.saturating_record(v * 1000);
            b.saturating_record(v * 2000);
        }
        let svg = percentile_chart(
            "x < y",
            &[
                Series {
                    name: "ringwait",
                    histogram: &a,
                },
                Series {
                    name: "tokio",
                    histogram: &b,
                },
            ],
            &["a & b".to_string()],
        );
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("x &lt; y") && svg.contains("a &amp; b"));
    }
}
