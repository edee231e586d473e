//! Line charts drawn by the server as SVG (no script): a time axis over a window, a value axis from
//! zero with "nice" ticks, and the series as polylines broken where samples are missing.
//!
//! Colours and the font family come from the stylesheet (classes); geometry and font sizes from
//! presentation attributes (sizes are in user units, so they scale with the drawing), so the charts
//! work under the listener's `style-src 'self'`.

use maud::{html, Markup};

/// The drawing's size in SVG user units (it scales to the page width). Two charts side by side
/// are about 510-590 px wide, so a user unit is about 0.85-1 px there.
const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 84.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 38.0;
/// Axis labels, in user units: about 11-12.5 px on the page at the widths above.
const LABEL_FONT: f64 = 13.0;
/// The "no samples" note.
const NOTE_FONT: f64 = 15.0;
/// Value ticks wanted (the nice step decides the exact number).
const Y_TICKS: usize = 5;
const MINUTE: u64 = 60;
const HOUR: u64 = 3_600;
const DAY: u64 = 86_400;
/// Steps of a duration axis below a day, in seconds: round numbers of the unit they show in.
const DURATION_STEPS: [u64; 17] = [
    1,
    2,
    5,
    10,
    15,
    30,
    MINUTE,
    2 * MINUTE,
    5 * MINUTE,
    10 * MINUTE,
    15 * MINUTE,
    30 * MINUTE,
    HOUR,
    2 * HOUR,
    3 * HOUR,
    6 * HOUR,
    12 * HOUR,
];

/// A linear map from a domain to a range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scale {
    pub d0: f64,
    pub d1: f64,
    pub r0: f64,
    pub r1: f64,
}

impl Scale {
    pub fn new(d0: f64, d1: f64, r0: f64, r1: f64) -> Scale {
        Scale { d0, d1, r0, r1 }
    }

    /// An empty domain maps to the middle of the range rather than dividing by zero.
    pub fn map(&self, v: f64) -> f64 {
        let span = self.d1 - self.d0;
        if span.abs() < f64::EPSILON {
            return (self.r0 + self.r1) / 2.0;
        }
        self.r0 + (v - self.d0) / span * (self.r1 - self.r0)
    }
}

/// A step of 1, 2, 2.5 or 5 times a power of ten, near `span / count`.
pub fn nice_step(span: f64, count: usize) -> f64 {
    step_of(span, count, &[1.0, 2.0, 2.5, 5.0])
}

/// The smallest `m x 10^k` (m from `mantissas`, ascending) at or above `span / count`.
fn step_of(span: f64, count: usize, mantissas: &[f64]) -> f64 {
    if !(span.is_finite() && span > 0.0) || count == 0 {
        return 1.0;
    }
    let raw = span / count as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let fraction = raw / magnitude;
    let nice = mantissas
        .iter()
        .copied()
        .find(|m| fraction <= *m)
        .unwrap_or(10.0);
    nice * magnitude
}

/// Ticks from 0 to the first multiple of `step` at or above `max` (so the top tick bounds the
/// data); at least 0 and one step.
pub fn ticks_by(max: f64, step: f64) -> Vec<f64> {
    let steps = (max / step).ceil().max(1.0) as usize;
    // Rounded so that 3 x 0.2 is 0.6, not 0.6000000000000001, in the labels.
    (0..=steps)
        .map(|i| (i as f64 * step * 1e9).round() / 1e9)
        .collect()
}

fn positive_or_one(max: f64) -> f64 {
    if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    }
}

/// A value-axis tick: its place in the series' unit, and its label.
#[derive(Clone, Debug, PartialEq)]
pub struct Tick {
    pub value: f64,
    pub label: String,
}

/// What a chart's values are; it decides the ticks and how they read. Steps are chosen in the
/// unit the labels show, so they read "10 / 20 / 30 min", not "8.3 / 16.7 min".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Axis {
    /// Seconds; labelled in s, min, h or d (one unit per axis, from the step).
    Duration,
    /// Bytes per second; labelled in bit/s, kbit/s, Mbit/s or Gbit/s (one unit per axis).
    BitRate,
}

impl Axis {
    /// About `count` steps from 0 to at least `max` (a series of zeros or nothing: one step).
    pub fn ticks(self, max: f64, count: usize) -> Vec<Tick> {
        match self {
            Axis::Duration => duration_ticks(max, count),
            Axis::BitRate => bit_rate_ticks(max, count),
        }
    }
}

fn duration_ticks(max: f64, count: usize) -> Vec<Tick> {
    let max = positive_or_one(max);
    let raw = max / count.max(1) as f64;
    let step = match DURATION_STEPS.iter().find(|s| **s as f64 >= raw) {
        Some(step) => *step as f64,
        None => step_of(max / DAY as f64, count, &[1.0, 2.0, 5.0]).max(1.0) * DAY as f64,
    };
    let (unit, per) = if step < MINUTE as f64 {
        ("s", 1)
    } else if step < HOUR as f64 {
        ("min", MINUTE)
    } else if step < DAY as f64 {
        ("h", HOUR)
    } else {
        ("d", DAY)
    };
    labelled(ticks_by(max, step), step, per as f64, unit, 1.0)
}

fn bit_rate_ticks(bytes_per_sec: f64, count: usize) -> Vec<Tick> {
    // Steps are nice in bits; below one bit per second there is nothing worth a finer axis.
    let bits = positive_or_one(bytes_per_sec * 8.0);
    let step = nice_step(bits, count).max(1.0);
    let ticks = ticks_by(bits, step);
    let top = ticks.last().copied().unwrap_or(step);
    let (unit, per) = if top >= 1e9 {
        ("Gbit/s", 1e9)
    } else if top >= 1e6 {
        ("Mbit/s", 1e6)
    } else if top >= 1e3 {
        ("kbit/s", 1e3)
    } else {
        ("bit/s", 1.0)
    };
    labelled(ticks, step, per, unit, 8.0)
}

/// Labels in one unit (`per` tick units make one label unit), with as many decimals as the step
/// needs; tick values are divided by `scale` back into the series' unit (bits to bytes).
fn labelled(ticks: Vec<f64>, step: f64, per: f64, unit: &str, scale: f64) -> Vec<Tick> {
    let decimals = decimals_of(step / per);
    ticks
        .into_iter()
        .map(|v| Tick {
            value: v / scale,
            label: if v == 0.0 {
                "0".to_string()
            } else {
                format!("{:.*} {unit}", decimals, v / per)
            },
        })
        .collect()
}

/// The decimals that show `step` (and so each multiple of it) exactly: 0.25 needs 2, 30 none.
fn decimals_of(step: f64) -> usize {
    (0..3)
        .find(|d| {
            let scaled = step * 10f64.powi(*d as i32);
            (scaled - scaled.round()).abs() < 1e-6
        })
        .unwrap_or(3)
}

/// Time ticks at whole multiples of `step` seconds inside `[start, end]`.
pub fn time_ticks(start: u64, end: u64, step: u64) -> Vec<u64> {
    if step == 0 || end < start {
        return Vec::new();
    }
    let first = start.div_ceil(step) * step;
    (0..)
        .map(|i| first + i * step)
        .take_while(|t| *t <= end)
        .collect()
}

/// "HH:MM" of a UNIX time, UTC.
pub fn clock(unix: u64) -> String {
    let day = unix % 86_400;
    format!("{:02}:{:02}", day / 3600, day / 60 % 60)
}

/// The drawable runs of a series: consecutive present samples inside the window, mapped to SVG
/// coordinates. A missing value (`None`) ends a run, so gaps stay visible.
pub fn segments(points: &[(u64, Option<f64>)], x: Scale, y: Scale) -> Vec<Vec<(f64, f64)>> {
    let mut runs = Vec::new();
    let mut run: Vec<(f64, f64)> = Vec::new();
    let (lo, hi) = (x.d0.min(x.d1), x.d0.max(x.d1));
    for (at, value) in points {
        let at = *at as f64;
        match value {
            Some(v) if v.is_finite() && at >= lo && at <= hi => run.push((x.map(at), y.map(*v))),
            _ => {
                if !run.is_empty() {
                    runs.push(std::mem::take(&mut run));
                }
            }
        }
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

fn polyline_points(run: &[(f64, f64)]) -> String {
    run.iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a chart shows.
pub struct Chart<'a> {
    /// Accessible name and caption.
    pub title: &'a str,
    /// The time window, UNIX seconds.
    pub start: u64,
    pub end: u64,
    /// (UNIX seconds, value); `None` for a sample without a value.
    pub points: &'a [(u64, Option<f64>)],
    /// What the values are: decides the value axis's ticks and labels.
    pub axis: Axis,
    /// A class for the series colour.
    pub tone: &'a str,
}

/// The chart as an `<svg class="chart">`.
pub fn line_chart(chart: &Chart<'_>) -> Markup {
    let max = chart
        .points
        .iter()
        .filter(|(at, _)| *at >= chart.start && *at <= chart.end)
        .filter_map(|(_, v)| *v)
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let ticks = chart.axis.ticks(max, Y_TICKS);
    let top = ticks.last().map_or(1.0, |t| t.value);
    let x = Scale::new(chart.start as f64, chart.end as f64, LEFT, WIDTH - RIGHT);
    let y = Scale::new(0.0, top, HEIGHT - BOTTOM, TOP);
    let runs = segments(chart.points, x, y);
    let span = chart.end.saturating_sub(chart.start);
    // About six labels on the time axis, on whole hours when the window is hours long.
    let step = match span {
        0..=HOUR => 10 * MINUTE,
        3_601..=21_600 => HOUR,
        21_601..=DAY => 4 * HOUR,
        _ => DAY,
    };
    // Baseline offset that centres a label on its grid line.
    let centre = LABEL_FONT * 0.35;
    let view_box = format!("0 0 {WIDTH} {HEIGHT}");
    html! {
        figure.chart-box {
            figcaption { (chart.title) }
            svg class=(format!("chart {}", chart.tone)) viewBox=(view_box) role="img"
                aria-label=(chart.title) font-size=(LABEL_FONT) {
                title { (chart.title) }
                g.grid {
                    @for tick in &ticks {
                        line x1=(LEFT) x2=(WIDTH - RIGHT) y1=(fmt1(y.map(tick.value))) y2=(fmt1(y.map(tick.value))) {}
                    }
                }
                g.axis.y-axis {
                    line x1=(LEFT) x2=(LEFT) y1=(TOP) y2=(HEIGHT - BOTTOM) {}
                    @for tick in &ticks {
                        text x=(LEFT - 6.0) y=(fmt1(y.map(tick.value) + centre)) text-anchor="end" {
                            (tick.label)
                        }
                    }
                }
                g.axis.x-axis {
                    line x1=(LEFT) x2=(WIDTH - RIGHT) y1=(HEIGHT - BOTTOM) y2=(HEIGHT - BOTTOM) {}
                    @for t in time_ticks(chart.start, chart.end, step) {
                        line x1=(fmt1(x.map(t as f64))) x2=(fmt1(x.map(t as f64)))
                            y1=(HEIGHT - BOTTOM) y2=(HEIGHT - BOTTOM + 5.0) {}
                        text x=(fmt1(x.map(t as f64))) y=(fmt1(HEIGHT - BOTTOM + 6.0 + LABEL_FONT)) text-anchor="middle" {
                            (clock(t))
                        }
                    }
                    text.axis-note x=(WIDTH - RIGHT) y=(HEIGHT - 2.0) text-anchor="end" { "UTC" }
                }
                @if runs.is_empty() {
                    text.empty x=(fmt1((LEFT + WIDTH - RIGHT) / 2.0)) y=(fmt1((TOP + HEIGHT - BOTTOM) / 2.0))
                        text-anchor="middle" font-size=(NOTE_FONT) { "No samples in this period" }
                }
                g.series {
                    @for run in &runs {
                        @if run.len() == 1 {
                            circle cx=(fmt1(run[0].0)) cy=(fmt1(run[0].1)) r="3" {}
                        } @else {
                            polyline points=(polyline_points(run)) fill="none" {}
                        }
                    }
                }
            }
        }
    }
}

fn fmt1(v: f64) -> String {
    format!("{v:.1}")
}

#[cfg(test)]
#[path = "charts_tests.rs"]
mod tests;
