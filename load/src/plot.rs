//! SVG charts of latency by percentile, the way HdrHistogram plots them: x is the percentile
//! on a "number of nines" scale (`-log10(1 − p)`: 0 = 0%, 1 = 90%, 2 = 99%, 3 = 99.9% …), y is
//! latency (µs internally; axis labels in us/ms/s, linear or `--log-y`). One run (`--svg`) or
//! several overlaid with a legend (`plot`).
//!
//! Inputs are the JSON summaries this tool writes (their `curve` field, already in µs) or
//! `.hgrm` percentile distributions (µs by default, `--hgrm-unit ms` for wrk2's).
//!
//! Drawn with plotters' SVG backend and no font feature: text goes into the SVG as `<text>`
//! elements for the viewer to render, so nothing here needs system fonts.

use std::path::Path;

use plotters::prelude::*;

use crate::cli::HgrmUnit;
use crate::report::parse_hgrm;

/// The curve's far right: 99.9999%.
const MAX_NINES: f64 = 6.0;
const WIDTH: u32 = 1000;
const HEIGHT: u32 = 600;

/// One named latency curve: `[percentile 0..=100, latency µs]` points.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<[f64; 2]>,
}

/// Loads `NAME=FILE`: JSON written by `--json`, or an `.hgrm` file.
pub fn load_series(spec: &str, hgrm_unit: HgrmUnit) -> Result<Series, String> {
    let (name, path) = spec
        .split_once('=')
        .ok_or_else(|| format!("plot input {spec:?} must be NAME=FILE"))?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let points = if path.ends_with(".json") {
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
        let curve = json["curve"]
            .as_array()
            .ok_or_else(|| format!("{path}: no \"curve\" array (not a ringgate-load JSON?)"))?;
        curve
            .iter()
            .filter_map(|p| Some([p.get(0)?.as_f64()?, p.get(1)?.as_f64()?]))
            .collect()
    } else {
        let scale = match hgrm_unit {
            HgrmUnit::Us => 1.0,
            HgrmUnit::Ms => 1000.0,
        };
        parse_hgrm(&text)
            .map_err(|e| format!("{path}: {e}"))?
            .into_iter()
            .map(|[p, v]| [p, v * scale])
            .collect()
    };
    Ok(Series {
        name: name.to_string(),
        points,
    })
}

/// Percentile (0..=100) → position on the nines axis, capped at `cap`.
pub fn nines(percentile: f64, cap: f64) -> f64 {
    let tail = 1.0 - percentile / 100.0;
    if tail <= 0.0 {
        return cap;
    }
    (-tail.log10()).clamp(0.0, cap)
}

fn nines_label(x: f64) -> String {
    let n = x.round() as i32;
    if (x - f64::from(n)).abs() > 1e-9 {
        return String::new();
    }
    match n {
        0 => "0%".into(),
        1 => "90%".into(),
        n => format!("99.{}%", "9".repeat((n - 2) as usize)).replace("99.%", "99%"),
    }
}

/// Draws `series` into an SVG at `path`.
pub fn draw_svg(path: &Path, title: &str, series: &[Series], log_y: bool) -> Result<(), String> {
    let drawn: Vec<&Series> = series.iter().filter(|s| !s.points.is_empty()).collect();
    if drawn.is_empty() {
        return Err("nothing to plot: every input is empty".into());
    }
    let finite_max = drawn
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|p| p[0] < 100.0)
        .map(|p| nines(p[0], MAX_NINES))
        .fold(0.0f64, f64::max);
    let x_max = finite_max.ceil().clamp(2.0, MAX_NINES);
    let y_max = drawn
        .iter()
        .flat_map(|s| s.points.iter())
        .map(|p| p[1])
        .fold(1.0f64, f64::max)
        * 1.05;
    let y_min = drawn
        .iter()
        .flat_map(|s| s.points.iter())
        .map(|p| p[1])
        .filter(|&v| v > 0.0)
        .fold(f64::MAX, f64::min)
        .min(y_max / 10.0)
        * 0.8;

    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let palette = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(23, 190, 207),
        RGBColor(0, 0, 0),
    ];
    let x_range = 0.0..x_max;

    macro_rules! draw_with_y {
        ($y_range:expr) => {{
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 22))
                .margin(15)
                .margin_right(45)
                .x_label_area_size(45)
                .y_label_area_size(80)
                .build_cartesian_2d(x_range, $y_range)
                .map_err(|e| e.to_string())?;
            chart
                .configure_mesh()
                .x_labels(x_max as usize + 1)
                .x_desc("percentile")
                .y_desc("latency")
                .x_label_formatter(&|x| nines_label(*x))
                .y_label_formatter(&|y| format_axis_us(*y))
                .draw()
                .map_err(|e| e.to_string())?;
            for (i, s) in drawn.iter().enumerate() {
                let color = palette[i % palette.len()];
                chart
                    .draw_series(LineSeries::new(
                        s.points
                            .iter()
                            .map(|p| (nines(p[0], x_max), p[1].max(y_min))),
                        color.stroke_width(2),
                    ))
                    .map_err(|e| e.to_string())?
                    .label(s.name.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|e| e.to_string())?;
        }};
    }
    if log_y {
        draw_with_y!((y_min..y_max).log_scale());
    } else {
        draw_with_y!(0.0..y_max);
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

fn format_axis_us(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{}s", trim(us / 1_000_000.0))
    } else if us >= 1_000.0 {
        format!("{}ms", trim(us / 1_000.0))
    } else {
        format!("{}us", trim(us))
    }
}

fn trim(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_scale() {
        assert_eq!(nines(0.0, 6.0), 0.0);
        assert!((nines(90.0, 6.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9, 6.0) - 3.0).abs() < 1e-9);
        assert_eq!(nines(100.0, 4.0), 4.0);
        assert_eq!(nines_label(0.0), "0%");
        assert_eq!(nines_label(1.0), "90%");
        assert_eq!(nines_label(2.0), "99%");
        assert_eq!(nines_label(4.0), "99.99%");
        assert_eq!(nines_label(2.5), "");
    }

    #[test]
    fn overlay_svg_has_curves_and_legend() {
        let dir = std::env::temp_dir().join(format!("ringgate-load-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = Series {
            name: "direct".into(),
            points: vec![[0.0, 10.0], [50.0, 20.0], [99.0, 40.0], [100.0, 90.0]],
        };
        let b = Series {
            name: "ringgate".into(),
            points: vec![
                [0.0, 12.0],
                [50.0, 25.0],
                [99.9, 60.0],
                [100.0, 1_000_000.0],
            ],
        };
        for log_y in [false, true] {
            let path = dir.join(format!("overlay-{log_y}.svg"));
            draw_svg(&path, "test", &[a.clone(), b.clone()], log_y).unwrap();
            let svg = std::fs::read_to_string(&path).unwrap();
            assert!(svg.starts_with("<svg"), "{}", &svg[..50]);
            // plotters puts each text on its own line inside <text>.
            assert!(svg.contains("\ndirect\n") && svg.contains("\nringgate\n"));
            assert!(svg.contains("\n99.9%\n"));
            assert!(svg.matches("<polyline").count() >= 2);
        }
        let empty = Series {
            name: "e".into(),
            points: vec![],
        };
        assert!(draw_svg(&dir.join("none.svg"), "t", &[empty], false).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
