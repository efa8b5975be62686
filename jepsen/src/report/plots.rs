//! Jepsen's perf plots as PNGs: `latency-raw.png`, `latency-quantiles.png`,
//! `rate.png`, and `clock-skew.png` when clock faults happened.
//!
//! Colours follow Jepsen: ok `#6DB6FE`-ish blue, info `#FFAA26`, fail
//! `#FEB5DA`; point shape by `f`; fault windows shaded by family (partition
//! `#E9DCA0`, kill `#E9A4A0`, pause `#A0B1E9`, clock `#A0E9E3`, alpha 0.6).
//! Text uses DejaVu Sans embedded in the binary (no system fonts needed).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Once;

use anyhow::{Context as _, anyhow};
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::checker::faults::{self, Family, Window};
use crate::history::{F, History, OpType};

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn register_font() -> anyhow::Result<()> {
    let mut err = None;
    REGISTER.call_once(|| {
        if plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_err() {
            err = Some(anyhow!("embedded font could not be loaded"));
        }
    });
    err.map_or(Ok(()), Err)
}

const SIZE: (u32, u32) = (1000, 480);
const OK: RGBColor = RGBColor(0x3A, 0x8E, 0xE6);
const INFO: RGBColor = RGBColor(0xFF, 0xAA, 0x26);
const FAIL: RGBColor = RGBColor(0xF2, 0x7E, 0xB8);

fn type_color(t: OpType) -> RGBColor {
    match t {
        OpType::Ok => OK,
        OpType::Info => INFO,
        _ => FAIL,
    }
}

/// Quantile line colours.
const QCOLORS: [RGBColor; 4] = [
    RGBColor(0x1F, 0x77, 0xB4),
    RGBColor(0x2C, 0xA0, 0x2C),
    RGBColor(0xFF, 0x7F, 0x0E),
    RGBColor(0xD6, 0x27, 0x28),
];

/// Draws points with one of a few marker shapes (by `f`), optionally labelled.
fn draw_points<'a, DB, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, Y>>,
    shape: usize,
    pts: Vec<(f64, f64)>,
    color: RGBColor,
    label: Option<String>,
) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    Y: Ranged<ValueType = f64>,
{
    macro_rules! go {
        ($mk:expr, $legend:expr) => {{
            let anno = chart
                .draw_series(pts.into_iter().map($mk))
                .map_err(|e| anyhow!("{e}"))?;
            if let Some(l) = label {
                anno.label(l).legend($legend);
            }
        }};
    }
    let style = color.filled();
    match shape % 4 {
        0 => go!(|p| Circle::new(p, 3, style), move |(x, y)| Circle::new(
            (x + 4, y),
            3,
            style
        )),
        1 => go!(|p| TriangleMarker::new(p, 4, style), move |(x, y)| {
            TriangleMarker::new((x + 4, y), 4, style)
        }),
        2 => go!(|p| Cross::new(p, 3, color.stroke_width(2)), move |(
            x,
            y,
        )| {
            Cross::new((x + 4, y), 3, color.stroke_width(2))
        }),
        _ => go!(
            |p| EmptyElement::at(p) + Rectangle::new([(-3, -3), (3, 3)], style),
            move |(x, y)| Rectangle::new([(x + 1, y - 3), (x + 7, y + 3)], style)
        ),
    }
    Ok(())
}

/// One completed client op for plotting.
#[derive(Clone, Debug)]
struct Point {
    t_s: f64,
    latency_ms: f64,
    f: F,
    kind: OpType,
}

fn points(history: &History) -> Vec<Point> {
    history
        .calls()
        .iter()
        .filter_map(|c| {
            let cmp = c.cmp?;
            Some(Point {
                t_s: c.inv.time as f64 / 1e9,
                latency_ms: (cmp.time.saturating_sub(c.inv.time)) as f64 / 1e6,
                f: c.inv.f,
                kind: cmp.kind,
            })
        })
        .collect()
}

fn family_color(f: Family) -> RGBColor {
    let (r, g, b) = f.color();
    RGBColor(r, g, b)
}

/// Shaded nemesis windows over the whole y range, one legend entry per family.
fn shade<'a, DB, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, Y>>,
    windows: &[Window],
    y: (f64, f64),
) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    Y: Ranged<ValueType = f64>,
{
    for fam in Family::ALL {
        let ws: Vec<&Window> = windows.iter().filter(|w| w.family == fam).collect();
        if ws.is_empty() {
            continue;
        }
        let color = family_color(fam);
        chart
            .draw_series(ws.iter().map(|w| {
                let x0 = w.shade_start as f64 / 1e9;
                let x1 = (w.shade_end as f64 / 1e9).max(x0 + 0.05);
                Rectangle::new([(x0, y.0), (x1, y.1)], color.mix(0.6).filled())
            }))
            .map_err(|e| anyhow!("{e}"))?
            .label(fam.name())
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.mix(0.6).filled())
            });
    }
    Ok(())
}

fn finish<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    root.present().map_err(|e| anyhow!("{e}"))
}

fn x_max(history: &History) -> f64 {
    (history.end_time() as f64 / 1e9).max(1.0)
}

fn fs_of(points: &[Point]) -> Vec<F> {
    let mut fs: Vec<F> = points.iter().map(|p| p.f).collect();
    fs.sort();
    fs.dedup();
    fs
}

/// `latency-raw.png`: every op's latency against its invocation time.
pub fn latency_raw(history: &History, path: &Path, title: &str) -> anyhow::Result<()> {
    register_font()?;
    let pts = points(history);
    let windows = faults::windows(history);
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let ymax = pts.iter().map(|p| p.latency_ms).fold(1.0f64, f64::max) * 2.0;
    let ymin = pts
        .iter()
        .map(|p| p.latency_ms)
        .filter(|l| *l > 0.0)
        .fold(ymax, f64::min)
        .min(0.1)
        / 2.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{title} latency"), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max(history), (ymin..ymax).log_scale())
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("Time (s)")
        .y_desc("Latency (ms)")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    shade(&mut chart, &windows, (ymin, ymax))?;
    let fs = fs_of(&pts);
    for (shape, f) in fs.iter().enumerate() {
        for kind in [OpType::Ok, OpType::Info, OpType::Fail] {
            let series: Vec<&Point> = pts.iter().filter(|p| p.f == *f && p.kind == kind).collect();
            if series.is_empty() {
                continue;
            }
            let color = type_color(kind);
            draw_points(
                &mut chart,
                shape,
                series
                    .iter()
                    .map(|p| (p.t_s, p.latency_ms.max(ymin)))
                    .collect(),
                color,
                Some(format!("{} {}", f.as_str(), kind.as_str())),
            )?;
        }
    }
    legend(&mut chart)?;
    drop(chart);
    finish(&root)
}

fn legend<'a, DB, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 12))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))
}

/// Bin width for time-bucketed plots: about 60 buckets, at least 1 s.
fn bin_s(history: &History) -> f64 {
    (x_max(history) / 60.0).max(1.0).ceil()
}

/// `latency-quantiles.png`: ok-op latency quantiles per time bin and f.
pub fn latency_quantiles(history: &History, path: &Path, title: &str) -> anyhow::Result<()> {
    register_font()?;
    let pts: Vec<Point> = points(history)
        .into_iter()
        .filter(|p| p.kind == OpType::Ok)
        .collect();
    let windows = faults::windows(history);
    let dt = bin_s(history);
    let qs = [0.5, 0.95, 0.99, 1.0];
    // (f, q) -> [(bin mid, latency)]
    let mut lines: BTreeMap<(F, usize), Vec<(f64, f64)>> = BTreeMap::new();
    let fs = fs_of(&pts);
    for f in &fs {
        let mut bins: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
        for p in pts.iter().filter(|p| p.f == *f) {
            bins.entry((p.t_s / dt) as u64)
                .or_default()
                .push(p.latency_ms);
        }
        for (b, mut ls) in bins {
            ls.sort_by(f64::total_cmp);
            for (qi, q) in qs.iter().enumerate() {
                let idx = ((ls.len() as f64 * q).floor() as usize).min(ls.len() - 1);
                lines
                    .entry((*f, qi))
                    .or_default()
                    .push(((b as f64 + 0.5) * dt, ls[idx].max(0.01)));
            }
        }
    }
    let ymax = lines.values().flatten().map(|p| p.1).fold(1.0f64, f64::max) * 2.0;
    let ymin = lines
        .values()
        .flatten()
        .map(|p| p.1)
        .fold(ymax, f64::min)
        .min(0.1)
        / 2.0;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{title} latency quantiles"), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max(history), (ymin..ymax).log_scale())
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("Time (s)")
        .y_desc("Latency (ms)")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    shade(&mut chart, &windows, (ymin, ymax))?;
    for ((f, qi), line) in &lines {
        let color = QCOLORS[*qi];
        let shape = fs.iter().position(|x| x == f).unwrap_or(0);
        chart
            .draw_series(LineSeries::new(line.iter().copied(), color.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(format!("{} q{}", f.as_str(), qs[*qi]))
            .legend(move |(x, y)| Rectangle::new([(x, y - 2), (x + 12, y + 2)], color.filled()));
        draw_points(&mut chart, shape, line.clone(), color, None)?;
    }
    legend(&mut chart)?;
    drop(chart);
    finish(&root)
}

/// `rate.png`: completions per second, per f and type.
pub fn rate(history: &History, path: &Path, title: &str) -> anyhow::Result<()> {
    register_font()?;
    let pts = points(history);
    let windows = faults::windows(history);
    let dt = bin_s(history);
    let nbins = (x_max(history) / dt).ceil() as u64 + 1;
    let mut lines: BTreeMap<(F, &'static str), Vec<f64>> = BTreeMap::new();
    for p in &pts {
        let b = ((p.t_s + p.latency_ms / 1e3) / dt) as usize;
        let v = lines
            .entry((p.f, p.kind.as_str()))
            .or_insert_with(|| vec![0.0; nbins as usize + 1]);
        if b < v.len() {
            v[b] += 1.0 / dt;
        }
    }
    let ymax = lines.values().flatten().fold(1.0f64, |a, b| a.max(*b)) * 1.15;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{title} rate"), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max(history), 0f64..ymax)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("Time (s)")
        .y_desc("Throughput (ops/s)")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    shade(&mut chart, &windows, (0.0, ymax))?;
    let fs = fs_of(&pts);
    for ((f, kind), counts) in &lines {
        let color = match *kind {
            "ok" => OK,
            "info" => INFO,
            _ => FAIL,
        };
        let shape = fs.iter().position(|x| x == f).unwrap_or(0);
        let line: Vec<(f64, f64)> = counts
            .iter()
            .enumerate()
            .map(|(i, c)| ((i as f64 + 0.5) * dt, *c))
            .collect();
        chart
            .draw_series(LineSeries::new(line.iter().copied(), color.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(format!("{} {}", f.as_str(), kind))
            .legend(move |(x, y)| Rectangle::new([(x, y - 2), (x + 12, y + 2)], color.filled()));
        draw_points(&mut chart, shape, line, color, None)?;
    }
    legend(&mut chart)?;
    drop(chart);
    finish(&root)
}

/// Per-node clock offsets recorded by clock nemesis completions
/// (`value["clock-offsets"] = {node: ms}`), as step series.
pub fn clock_offsets(history: &History) -> BTreeMap<String, Vec<(f64, f64)>> {
    let mut out: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for (_, cmp) in faults::nemesis_pairs(history) {
        let Some(c) = cmp else { continue };
        let Some(offsets) = c.value.get("clock-offsets").and_then(|v| v.as_object()) else {
            continue;
        };
        for (node, ms) in offsets {
            if let Some(ms) = ms.as_f64() {
                out.entry(node.clone())
                    .or_default()
                    .push((c.time as f64 / 1e9, ms));
            }
        }
    }
    out
}

/// `clock-skew.png`; returns false (and writes nothing) if no clock op ran.
pub fn clock_skew(history: &History, path: &Path, title: &str) -> anyhow::Result<bool> {
    register_font()?;
    let series = clock_offsets(history);
    if series.is_empty() {
        return Ok(false);
    }
    let xmax = x_max(history);
    let (mut ymin, mut ymax) = series
        .values()
        .flatten()
        .fold((0.0f64, 0.0f64), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let pad = ((ymax - ymin) * 0.1).max(1.0);
    ymin -= pad;
    ymax += pad;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{title} clock skew"), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..xmax, ymin..ymax)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("Time (s)")
        .y_desc("Offset (ms)")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (i, (node, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        // Step line: hold each offset until the next record, then to the end.
        let mut step = Vec::new();
        let mut last = 0.0;
        for (t, v) in pts {
            step.push((*t, last));
            step.push((*t, *v));
            last = *v;
        }
        step.push((xmax, last));
        chart
            .draw_series(LineSeries::new(step, color.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(node.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 2), (x + 12, y + 2)], color.filled()));
    }
    legend(&mut chart)?;
    drop(chart);
    finish(&root)?;
    Ok(true)
}

/// Writes every plot into `dir`; returns the files written.
pub fn write_all(history: &History, dir: &Path, title: &str) -> anyhow::Result<Vec<String>> {
    let mut written = Vec::new();
    latency_raw(history, &dir.join("latency-raw.png"), title).context("latency-raw.png")?;
    written.push("latency-raw.png".to_string());
    latency_quantiles(history, &dir.join("latency-quantiles.png"), title)
        .context("latency-quantiles.png")?;
    written.push("latency-quantiles.png".to_string());
    rate(history, &dir.join("rate.png"), title).context("rate.png")?;
    written.push("rate.png".to_string());
    if clock_skew(history, &dir.join("clock-skew.png"), title).context("clock-skew.png")? {
        written.push("clock-skew.png".to_string());
    }
    Ok(written)
}
