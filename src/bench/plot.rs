//! `--plot FILE.svg`: the scaling curves of `easel bench generate` as a small
//! hand-written SVG (no plotting crate): seconds per image against K, and
//! milliseconds per candidate against K, one line per size. K is on a log₂ axis
//! (1, 2, 4, 8, 16 are evenly spaced); a flat second panel means a candidate
//! costs the same however many run beside it, a falling one means batching pays.

use std::fmt::Write;
use std::path::Path;

use crate::bench::generate::Point;
use crate::error::{Error, Result};

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 340.0;
const PANEL: f64 = WIDTH / 2.0;
/// Inner margins of a panel: left (tick labels), right, top (title), bottom (axis label).
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 44.0;
/// The plot area of a panel, inside its margins.
const PLOT_W: f64 = PANEL - LEFT - RIGHT;
const PLOT_H: f64 = HEIGHT - TOP - BOTTOM;
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
    for (i, panel) in PANELS.iter().enumerate() {
        let frame = Frame::new(i, panel, points);
        frame.axes(&mut s, panel.title, points);
        for (j, size) in sizes(points).iter().enumerate() {
            let colour = COLOURS[j % COLOURS.len()];
            frame.line(&mut s, panel, points, *size, colour);
            // The legend once, in the first panel.
            if i == 0 {
                frame.legend(&mut s, j, *size, colour);
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

/// Where one panel draws: its left edge, and the log₂ K range and the value
/// range (zero to a tenth above the largest) mapped onto its plot area.
struct Frame {
    x0: f64,
    k_lo: f64,
    k_hi: f64,
    y_max: f64,
}

impl Frame {
    /// Panel `i` of the row, showing `panel`'s values of `points`.
    fn new(i: usize, panel: &Panel, points: &[Point]) -> Self {
        let (k_lo, k_hi) = points
            .iter()
            .map(|p| (p.candidates as f64).log2())
            .fold((f64::MAX, f64::MIN), |(lo, hi), k| (lo.min(k), hi.max(k)));
        let y_max = points.iter().map(panel.value).fold(0.0, f64::max) * 1.1;
        Self {
            x0: i as f64 * PANEL + LEFT,
            k_lo,
            k_hi,
            y_max: if y_max > 0.0 { y_max } else { 1.0 },
        }
    }

    /// The x of log₂ K = `k`; a single K sits in the middle.
    fn x(&self, k: f64) -> f64 {
        if self.k_hi > self.k_lo {
            self.x0 + (k - self.k_lo) / (self.k_hi - self.k_lo) * PLOT_W
        } else {
            self.x0 + PLOT_W / 2.0
        }
    }

    fn y(&self, v: f64) -> f64 {
        TOP + PLOT_H * (1.0 - v / self.y_max)
    }

    /// The title, the axes, y ticks at quarters and x ticks at each K.
    fn axes(&self, s: &mut String, title: &str, points: &[Point]) {
        let x0 = self.x0;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="20" text-anchor="middle" font-size="13">{}</text>"#,
            x0 + PLOT_W / 2.0,
            title
        );
        let _ = writeln!(
            s,
            r#"<path d="M{x0} {TOP} V{} H{}" fill="none" stroke="black"/>"#,
            TOP + PLOT_H,
            x0 + PLOT_W
        );
        for q in 0..=4 {
            let v = self.y_max * q as f64 / 4.0;
            let _ = writeln!(
                s,
                r##"<line x1="{x0}" x2="{}" y1="{y}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
                x0 + PLOT_W,
                x0 - 6.0,
                self.y(v) + 4.0,
                label(v),
                y = self.y(v),
            );
        }
        let mut seen_k: Vec<usize> = points.iter().map(|p| p.candidates).collect();
        seen_k.sort_unstable();
        seen_k.dedup();
        for k in seen_k {
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="middle">{k}</text>"#,
                self.x((k as f64).log2()),
                TOP + PLOT_H + 16.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">K (candidates)</text>"#,
            x0 + PLOT_W / 2.0,
            HEIGHT - 8.0
        );
    }

    /// The line of one size: `panel`'s value at each K, a dot at each point.
    fn line(
        &self,
        s: &mut String,
        panel: &Panel,
        points: &[Point],
        size: (usize, usize),
        colour: &str,
    ) {
        let line: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| (p.width, p.height) == size)
            .map(|p| {
                (
                    self.x((p.candidates as f64).log2()),
                    self.y((panel.value)(p)),
                )
            })
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
    }

    /// Entry `j` of the legend: a swatch and the size.
    fn legend(&self, s: &mut String, j: usize, size: (usize, usize), colour: &str) {
        let ly = TOP + 10.0 + 16.0 * j as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{}" y="{}" width="12" height="3" fill="{colour}"/><text x="{}" y="{}">{}x{}</text>"#,
            self.x0 + 10.0,
            ly - 4.0,
            self.x0 + 26.0,
            ly,
            size.0,
            size.1
        );
    }
}

/// Write the plot atomically.
pub fn write(path: &Path, points: &[Point]) -> Result<()> {
    crate::output::write_atomic(path, svg(points).as_bytes())
}

/// Check where `--plot` writes before any work (like `-o`): a FILE.svg that
/// can be written.
pub fn check_path(path: &Path) -> Result<()> {
    if !path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"))
    {
        return Err(Error::BadInput(format!(
            "--plot {}: the plot is drawn as SVG; name a FILE.svg",
            path.display()
        )));
    }
    crate::output::check_writable(path)
}
