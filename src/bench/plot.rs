//! `--plot FILE.svg`: the scaling curves of `easel bench generate` as a small
//! hand-written SVG (no plotting crate): seconds per image against K, and
//! milliseconds per candidate against K, one line per size. K is on a log₂ axis
//! (1, 2, 4, 8, 16 are evenly spaced); a flat second panel means a candidate
//! costs the same however many run beside it, a falling one means batching pays.

use std::fmt::Write;
use std::path::Path;

use crate::bench::generate::Point;
use crate::error::Result;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 340.0;
const PANEL: f64 = WIDTH / 2.0;
/// Inner margins of a panel: left (tick labels), right, top (title), bottom (axis label).
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 44.0;
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];

/// One panel: a title and the value each point contributes.
struct Panel {
    title: &'static str,
    value: fn(&Point) -> f64,
}

const PANELS: [Panel; 2] = [
    Panel {
        title: "time per image (s) vs candidates K",
        value: |p| p.stats.median_ms / 1e3,
    },
    Panel {
        title: "time per candidate (ms) vs candidates K",
        value: Point::ms_per_candidate,
    },
];

/// The sizes in `points`, in first-seen order.
fn sizes(points: &[Point]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for p in points {
        if !out.contains(&(p.width, p.height)) {
            out.push((p.width, p.height));
        }
    }
    out
}

/// About three significant digits.
fn label(v: f64) -> String {
    let digits = match v.abs() {
        a if a == 0.0 || a >= 100.0 => 0,
        a if a >= 10.0 => 1,
        a if a >= 1.0 => 2,
        _ => 3,
    };
    format!("{v:.digits$}")
}

/// The SVG document for `points`.
pub fn svg(points: &[Point]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let ks: Vec<f64> = points
        .iter()
        .map(|p| (p.candidates as f64).log2())
        .collect();
    let (k_lo, k_hi) = ks
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &k| (lo.min(k), hi.max(k)));
    let (plot_w, plot_h) = (PANEL - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    for (i, panel) in PANELS.iter().enumerate() {
        let x0 = i as f64 * PANEL + LEFT;
        let y_max = points.iter().map(panel.value).fold(0.0, f64::max) * 1.1;
        let y_max = if y_max > 0.0 { y_max } else { 1.0 };
        let x = |k: f64| {
            if k_hi > k_lo {
                x0 + (k - k_lo) / (k_hi - k_lo) * plot_w
            } else {
                x0 + plot_w / 2.0
            }
        };
        let y = |v: f64| TOP + plot_h * (1.0 - v / y_max);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="20" text-anchor="middle" font-size="13">{}</text>"#,
            x0 + plot_w / 2.0,
            panel.title
        );
        // Axes, y ticks at quarters, x ticks at each K.
        let _ = writeln!(
            s,
            r#"<path d="M{x0} {TOP} V{} H{}" fill="none" stroke="black"/>"#,
            TOP + plot_h,
            x0 + plot_w
        );
        for q in 0..=4 {
            let v = y_max * q as f64 / 4.0;
            let _ = writeln!(
                s,
                r##"<line x1="{x0}" x2="{}" y1="{y}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
                x0 + plot_w,
                x0 - 6.0,
                y(v) + 4.0,
                label(v),
                y = y(v),
            );
        }
        let mut seen_k: Vec<usize> = points.iter().map(|p| p.candidates).collect();
        seen_k.sort_unstable();
        seen_k.dedup();
        for k in seen_k {
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="middle">{k}</text>"#,
                x((k as f64).log2()),
                TOP + plot_h + 16.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">K (candidates)</text>"#,
            x0 + plot_w / 2.0,
            HEIGHT - 8.0
        );
        for (j, size) in sizes(points).iter().enumerate() {
            let colour = COLOURS[j % COLOURS.len()];
            let line: Vec<(f64, f64)> = points
                .iter()
                .filter(|p| (p.width, p.height) == *size)
                .map(|p| (x((p.candidates as f64).log2()), y((panel.value)(p))))
                .collect();
            let path: Vec<String> = line.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
                path.join(" ")
            );
            for (a, b) in &line {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{a:.1}" cy="{b:.1}" r="3" fill="{colour}"/>"#
                );
            }
            if i == 0 {
                let ly = TOP + 10.0 + 16.0 * j as f64;
                let _ = writeln!(
                    s,
                    r#"<rect x="{}" y="{}" width="12" height="3" fill="{colour}"/><text x="{}" y="{}">{}x{}</text>"#,
                    x0 + 10.0,
                    ly - 4.0,
                    x0 + 26.0,
                    ly,
                    size.0,
                    size.1
                );
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

/// Write the plot atomically.
pub fn write(path: &Path, points: &[Point]) -> Result<()> {
    crate::output::write_atomic(path, svg(points).as_bytes())
}
