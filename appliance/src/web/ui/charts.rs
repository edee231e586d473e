//! Line charts drawn by the server as SVG (no script): a time axis over a window, a value axis from
//! zero with "nice" ticks, and the series as polylines broken where samples are missing.
//!
//! Colours and fonts come from the stylesheet (classes), geometry from presentation attributes, so
//! the charts work under the listener's `style-src 'self'`.

use maud::{html, Markup};

/// The drawing's size in SVG user units (it scales to the page width).
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 78.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 34.0;
/// Value ticks wanted (the nice step decides the exact number).
const Y_TICKS: usize = 5;

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
    if !(span.is_finite() && span > 0.0) || count == 0 {
        return 1.0;
    }
    let raw = span / count as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let fraction = raw / magnitude;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 2.5 {
        2.5
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// Ticks from 0 to the first multiple of the step at or above `max` (so the top tick bounds the
/// data). A series of zeros or nothing still gets an axis 0..1.
pub fn value_ticks(max: f64, count: usize) -> Vec<f64> {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let step = nice_step(max, count);
    let steps = (max / step).ceil().max(1.0) as usize;
    // Rounded so that 3 x 0.2 is 0.6, not 0.6000000000000001, in the labels.
    (0..=steps)
        .map(|i| (i as f64 * step * 1e9).round() / 1e9)
        .collect()
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
    /// Labels of the value axis.
    pub format: fn(f64) -> String,
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
    let ticks = value_ticks(max, Y_TICKS);
    let top = ticks.last().copied().unwrap_or(1.0);
    let x = Scale::new(chart.start as f64, chart.end as f64, LEFT, WIDTH - RIGHT);
    let y = Scale::new(0.0, top, HEIGHT - BOTTOM, TOP);
    let runs = segments(chart.points, x, y);
    let span = chart.end.saturating_sub(chart.start);
    // About six labels on the time axis, on whole hours when the window is hours long.
    let step = match span {
        0..=3_600 => 600,
        3_601..=21_600 => 3_600,
        21_601..=86_400 => 4 * 3_600,
        _ => 24 * 3_600,
    };
    let view_box = format!("0 0 {WIDTH} {HEIGHT}");
    html! {
        figure.chart-box {
            figcaption { (chart.title) }
            svg class=(format!("chart {}", chart.tone)) viewBox=(view_box) role="img"
                aria-label=(chart.title) {
                title { (chart.title) }
                g.grid {
                    @for tick in &ticks {
                        line x1=(LEFT) x2=(WIDTH - RIGHT) y1=(fmt1(y.map(*tick))) y2=(fmt1(y.map(*tick))) {}
                    }
                }
                g.axis.y-axis {
                    line x1=(LEFT) x2=(LEFT) y1=(TOP) y2=(HEIGHT - BOTTOM) {}
                    @for tick in &ticks {
                        text x=(LEFT - 6.0) y=(fmt1(y.map(*tick) + 4.0)) text-anchor="end" {
                            ((chart.format)(*tick))
                        }
                    }
                }
                g.axis.x-axis {
                    line x1=(LEFT) x2=(WIDTH - RIGHT) y1=(HEIGHT - BOTTOM) y2=(HEIGHT - BOTTOM) {}
                    @for t in time_ticks(chart.start, chart.end, step) {
                        line x1=(fmt1(x.map(t as f64))) x2=(fmt1(x.map(t as f64)))
                            y1=(HEIGHT - BOTTOM) y2=(HEIGHT - BOTTOM + 5.0) {}
                        text x=(fmt1(x.map(t as f64))) y=(HEIGHT - BOTTOM + 18.0) text-anchor="middle" {
                            (clock(t))
                        }
                    }
                    text.axis-note x=(WIDTH - RIGHT) y=(HEIGHT - 2.0) text-anchor="end" { "UTC" }
                }
                @if runs.is_empty() {
                    text.empty x=(fmt1((LEFT + WIDTH - RIGHT) / 2.0)) y=(fmt1((TOP + HEIGHT - BOTTOM) / 2.0))
                        text-anchor="middle" { "No samples in this period" }
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
