use super::*;

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
fn ticks_start_at_zero_and_bound_the_maximum() {
    assert_eq!(ticks_by(10.0, 2.0), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
    let ticks = ticks_by(1234.0, nice_step(1234.0, 5));
    assert_eq!(ticks[0], 0.0);
    assert!(*ticks.last().unwrap() >= 1234.0, "{ticks:?}");
    assert!(ticks.len() <= 7, "{ticks:?}");
    // No floating-point noise in the values.
    assert_eq!(ticks_by(1.0, 0.2), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
    // At least one step above zero.
    assert_eq!(ticks_by(0.0, 5.0), vec![0.0, 5.0]);
}

fn labels(ticks: &[Tick]) -> Vec<&str> {
    ticks.iter().map(|t| t.label.as_str()).collect()
}

fn values(ticks: &[Tick]) -> Vec<f64> {
    ticks.iter().map(|t| t.value).collect()
}

#[test]
fn duration_ticks_are_round_in_the_unit_they_show() {
    // 41.7 min: ten-minute steps, not 8.3 / 16.7 / 33.3 min.
    let ticks = Axis::Duration.ticks(2_500.0, 5);
    assert_eq!(
        labels(&ticks),
        ["0", "10 min", "20 min", "30 min", "40 min", "50 min"]
    );
    assert_eq!(values(&ticks), [0.0, 600.0, 1200.0, 1800.0, 2400.0, 3000.0]);
    assert_eq!(
        labels(&Axis::Duration.ticks(150.0, 5)),
        ["0", "30 s", "60 s", "90 s", "120 s", "150 s"]
    );
    assert_eq!(
        labels(&Axis::Duration.ticks(41.0, 5)),
        ["0", "10 s", "20 s", "30 s", "40 s", "50 s"]
    );
    assert_eq!(
        labels(&Axis::Duration.ticks(4_000.0, 5)),
        ["0", "15 min", "30 min", "45 min", "60 min", "75 min"]
    );
    assert_eq!(
        labels(&Axis::Duration.ticks(22_620.0, 5)),
        ["0", "2 h", "4 h", "6 h", "8 h"]
    );
    assert_eq!(
        labels(&Axis::Duration.ticks(3.0 * DAY as f64, 5)),
        ["0", "1 d", "2 d", "3 d"]
    );
    // No data, or broken data: an axis 0..1 s.
    for broken in [0.0, -5.0, f64::NAN, f64::INFINITY] {
        assert_eq!(
            labels(&Axis::Duration.ticks(broken, 5)),
            ["0", "1 s"],
            "{broken}"
        );
    }
}

#[test]
fn duration_steps_are_from_the_list_for_any_maximum() {
    let mut max = 0.7;
    while max < 400.0 * DAY as f64 {
        let ticks = Axis::Duration.ticks(max, 5);
        let top = ticks.last().unwrap().value;
        assert!(top >= max, "{max}: {ticks:?}");
        assert!((2..=7).contains(&ticks.len()), "{max}: {ticks:?}");
        let step = ticks[1].value as u64;
        assert!(
            DURATION_STEPS.contains(&step) || (step.is_multiple_of(DAY) && step > 0),
            "{max}: step {step}"
        );
        // One unit per axis, and whole numbers of it.
        let unit = ticks[1].label.split(' ').nth(1).unwrap().to_string();
        for tick in &ticks[1..] {
            let (number, tick_unit) = tick.label.split_once(' ').unwrap();
            assert_eq!(tick_unit, unit, "{max}: {ticks:?}");
            assert!(number.parse::<u64>().is_ok(), "{max}: {ticks:?}");
        }
        max *= 1.37;
    }
}

#[test]
fn bit_rate_ticks_are_round_in_bits() {
    // 390 Mbit/s at most (48.75 MB/s): 100 Mbit/s steps, not 80 / 160 / 240.
    let ticks = Axis::BitRate.ticks(48.75e6, 5);
    assert_eq!(
        labels(&ticks),
        ["0", "100 Mbit/s", "200 Mbit/s", "300 Mbit/s", "400 Mbit/s"]
    );
    // Values stay in the series' unit, bytes per second.
    assert_eq!(values(&ticks)[1], 12.5e6);
    assert_eq!(
        labels(&Axis::BitRate.ticks(125_000.0, 5)),
        [
            "0",
            "0.2 Mbit/s",
            "0.4 Mbit/s",
            "0.6 Mbit/s",
            "0.8 Mbit/s",
            "1.0 Mbit/s"
        ]
    );
    assert_eq!(
        labels(&Axis::BitRate.ticks(300e6, 5)),
        [
            "0",
            "0.5 Gbit/s",
            "1.0 Gbit/s",
            "1.5 Gbit/s",
            "2.0 Gbit/s",
            "2.5 Gbit/s"
        ]
    );
    assert_eq!(
        labels(&Axis::BitRate.ticks(1_400.0, 5)),
        [
            "0",
            "2.5 kbit/s",
            "5.0 kbit/s",
            "7.5 kbit/s",
            "10.0 kbit/s",
            "12.5 kbit/s"
        ]
    );
    // Nothing sent: an axis 0..1 bit/s, not fractions of a bit.
    for broken in [0.0, -1.0, f64::NAN] {
        assert_eq!(
            labels(&Axis::BitRate.ticks(broken, 5)),
            ["0", "1 bit/s"],
            "{broken}"
        );
    }
}

#[test]
fn labels_read_11_to_12_5_px_in_two_columns() {
    // A chart of the two-column layout is 510-590 px wide on a 1280 px page.
    for px in [510.0, 590.0] {
        let shown = LABEL_FONT * px / WIDTH;
        assert!(
            (11.0..=12.8).contains(&shown),
            "{px} px wide: {shown} px labels"
        );
    }
    let svg = render(&[]);
    assert!(
        svg.contains(&format!("font-size=\"{LABEL_FONT}\"")),
        "{svg}"
    );
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
        axis: Axis::Duration,
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
    assert!(svg.contains(">0<") && svg.contains(">1 s<"), "{svg}");
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
    // The largest value (230 s) is under the top tick (4 min, of one-minute steps).
    assert!(svg.contains(">4 min<") && svg.contains(">3 min<"), "{svg}");
    assert!(!svg.contains(">5 min<"), "{svg}");
}
