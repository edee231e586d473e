use super::*;

const HOUR: u64 = 3_600;
const DAY: u64 = 86_400;

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn scale_maps_ends_and_middle_and_survives_an_empty_domain() {
    let s = Scale::new(0.0, 10.0, 100.0, 200.0);
    assert_eq!(s.map(0.0), 100.0);
    assert_eq!(s.map(10.0), 200.0);
    assert_eq!(s.map(5.0), 150.0);
    // An inverted range (SVG y grows downwards).
    let y = Scale::new(0.0, 4.0, 200.0, 0.0);
    assert_eq!(y.map(1.0), 150.0);
    // A zero-width domain would divide by zero: it maps to the middle.
    let flat = Scale::new(3.0, 3.0, 0.0, 100.0);
    assert_eq!(flat.map(3.0), 50.0);
    assert!(flat.map(7.0).is_finite());
}

#[test]
fn nice_steps_are_1_2_2_5_5_times_a_power_of_ten() {
    assert_eq!(nice_step(10.0, 5), 2.0);
    assert_eq!(nice_step(100.0, 5), 20.0);
    assert_eq!(nice_step(12.0, 5), 2.5);
    assert_eq!(nice_step(0.9, 5), 0.2);
    assert_eq!(nice_step(37.0, 5), 10.0);
    // Nonsense input still gives a usable step.
    assert_eq!(nice_step(0.0, 5), 1.0);
    assert_eq!(nice_step(f64::NAN, 5), 1.0);
    assert_eq!(nice_step(10.0, 0), 1.0);
}

#[test]
fn value_ticks_start_at_zero_and_bound_the_maximum() {
    assert_eq!(value_ticks(10.0, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
    let ticks = value_ticks(1234.0, 5);
    assert_eq!(ticks[0], 0.0);
    assert!(*ticks.last().unwrap() >= 1234.0, "{ticks:?}");
    assert!(ticks.len() <= 7, "{ticks:?}");
    // No floating-point noise in the labels.
    assert_eq!(value_ticks(1.0, 5), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
    // All-zero, empty or broken data: an axis 0..1.
    assert_eq!(value_ticks(0.0, 5), value_ticks(1.0, 5));
    assert_eq!(*value_ticks(f64::INFINITY, 5).last().unwrap(), 1.0);
    assert_eq!(*value_ticks(-5.0, 5).last().unwrap(), 1.0);
}

#[test]
fn time_ticks_fall_on_whole_steps_inside_the_window() {
    let start = 10 * DAY + 90 * 60; // 01:30
    let ticks = time_ticks(start, start + 5 * HOUR, HOUR);
    assert_eq!(ticks.len(), 5);
    assert_eq!(clock(ticks[0]), "02:00");
    assert_eq!(clock(*ticks.last().unwrap()), "06:00");
    assert!(time_ticks(100, 50, HOUR).is_empty());
    assert!(time_ticks(0, 100, 0).is_empty());
    assert_eq!(clock(DAY - 60), "23:59");
}

#[test]
fn segments_break_at_gaps_and_drop_what_is_outside_the_window() {
    let x = Scale::new(0.0, 100.0, 0.0, 100.0);
    let y = Scale::new(0.0, 10.0, 100.0, 0.0);
    let points = [
        (10, Some(1.0)),
        (20, Some(2.0)),
        (30, None),
        (40, Some(5.0)),
        (200, Some(9.0)),
        (50, Some(f64::NAN)),
    ];
    let runs = segments(&points, x, y);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0], vec![(10.0, 90.0), (20.0, 80.0)]);
    assert_eq!(runs[1], vec![(40.0, 50.0)]);
    assert!(segments(&[], x, y).is_empty());
}

fn render(points: &[(u64, Option<f64>)]) -> String {
    line_chart(&Chart {
        title: "RPO <last 24 h>",
        start: 10 * DAY,
        end: 11 * DAY,
        points,
        format: |v| format!("{v:.0} s"),
        tone: "tone-a",
    })
    .into_string()
}

#[test]
fn an_empty_series_draws_axes_and_says_so() {
    let svg = render(&[]);
    assert!(svg.contains("class=\"chart tone-a\""), "{svg}");
    assert!(svg.contains("No samples in this period"));
    assert_eq!(count(&svg, "<polyline"), 0);
    assert_eq!(count(&svg, "<circle"), 0);
    // Axes: 0..1 on the value axis, 00:00..00:00 every 4 h on the time axis.
    assert!(svg.contains(">0 s<") && svg.contains(">1 s<"), "{svg}");
    assert!(svg.contains(">04:00<") && svg.contains(">20:00<"), "{svg}");
    // The title is escaped, not markup.
    assert!(svg.contains("RPO &lt;last 24 h&gt;"));
    assert!(!svg.contains("<last 24 h>"));
}

#[test]
fn a_single_sample_is_a_dot() {
    let svg = render(&[(10 * DAY + HOUR, Some(30.0))]);
    assert_eq!(count(&svg, "<circle"), 1, "{svg}");
    assert_eq!(count(&svg, "<polyline"), 0);
    assert!(!svg.contains("No samples"));
}

#[test]
fn a_series_with_a_gap_is_two_lines_inside_the_plot() {
    let points: Vec<(u64, Option<f64>)> = (0..24)
        .map(|h| {
            let v = if h == 12 { None } else { Some(h as f64 * 10.0) };
            (10 * DAY + h * HOUR, v)
        })
        .collect();
    let svg = render(&points);
    assert_eq!(count(&svg, "<polyline"), 2, "{svg}");
    // Every plotted coordinate is inside the plot area.
    let start = svg.find("points=\"").unwrap() + 8;
    let end = start + svg[start..].find('"').unwrap();
    for pair in svg[start..end].split(' ') {
        let (x, y) = pair.split_once(',').unwrap();
        let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
        assert!((LEFT..=WIDTH - RIGHT).contains(&x), "{x}");
        assert!((TOP..=HEIGHT - BOTTOM).contains(&y), "{y}");
    }
    // The largest value (230) is under the top tick (250).
    assert!(svg.contains(">250 s<"), "{svg}");
}
