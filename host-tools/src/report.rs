//! The evaluation report: Markdown for review, and one self-contained HTML page (SVG charts inline)
//! to open in a browser. Charts: per-class accuracy per target, a confusion matrix heat map per
//! target, and the per-layer int8 error from the quantization debugger.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::eval::Metrics;
use crate::quantize::debug::LayerError;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write the report in {path}: {error}")]
    Write { path: String, error: std::io::Error },
    #[error("cannot draw a chart: {0}")]
    Chart(String),
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn chart_err(e: impl std::fmt::Display) -> ReportError {
    ReportError::Chart(e.to_string())
}

/// Grouped bars: per-class top-1 of every target.
pub fn per_class_svg(metrics: &[Metrics]) -> Result<String, ReportError> {
    let mut svg = String::new();
    {
        let classes = metrics.first().map_or(0, |m| m.per_class.len());
        let root = SVGBackend::with_string(&mut svg, (900, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_err)?;
        let lowest = metrics.iter().flat_map(|m| m.per_class.iter().map(|c| c.top1)).fold(100.0f64, f64::min);
        let floor = (lowest - 5.0).clamp(0.0, 95.0).floor();
        let mut chart = ChartBuilder::on(&root)
            .caption("Per-class top-1 accuracy (%)", ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(70)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..classes as f64, floor..100.0)
            .map_err(chart_err)?;
        let names: Vec<String> = metrics.first().map(|m| m.per_class.iter().map(|c| c.class.clone()).collect()).unwrap_or_default();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(classes.max(1))
            .x_label_formatter(&|x| names.get(x.floor() as usize).cloned().unwrap_or_default())
            .x_label_style(("sans-serif", 11).into_font().transform(FontTransform::Rotate90))
            .draw()
            .map_err(chart_err)?;
        let width = 0.8 / metrics.len().max(1) as f64;
        for (t, m) in metrics.iter().enumerate() {
            let color = PALETTE[t % PALETTE.len()];
            chart
                .draw_series(m.per_class.iter().enumerate().map(|(c, acc)| {
                    let x0 = c as f64 + 0.1 + t as f64 * width;
                    Rectangle::new([(x0, floor), (x0 + width, acc.top1)], color.filled())
                }))
                .map_err(chart_err)?
                .label(m.target.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(chart_err)?;
        root.present().map_err(chart_err)?;
    }
    Ok(svg)
}

/// Heat map of `confusion[truth][predicted]`, counts written in the cells.
pub fn confusion_svg(m: &Metrics) -> Result<String, ReportError> {
    let mut svg = String::new();
    {
        let n = m.confusion.len();
        let root = SVGBackend::with_string(&mut svg, (620, 600)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("Confusion matrix: {} (rows: truth, columns: predicted)", m.target), ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(80)
            .y_label_area_size(90)
            .build_cartesian_2d(0..n, 0..n)
            .map_err(chart_err)?;
        let names: Vec<String> = m.per_class.iter().map(|c| c.class.clone()).collect();
        let name = |i: &usize| names.get(*i).cloned().unwrap_or_default();
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(n)
            .y_labels(n)
            .x_label_formatter(&name)
            .y_label_formatter(&|i| if *i < n { name(&(n - 1 - i)) } else { String::new() })
            .x_label_style(("sans-serif", 11).into_font().transform(FontTransform::Rotate90))
            .draw()
            .map_err(chart_err)?;
        let max = m.confusion.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
        for (t, row) in m.confusion.iter().enumerate() {
            for (p, &count) in row.iter().enumerate() {
                let y = n - 1 - t;
                let shade = (count as f64 / max).sqrt();
                let color = RGBColor((255.0 * (1.0 - 0.85 * shade)) as u8, (255.0 * (1.0 - 0.6 * shade)) as u8, 255);
                chart.draw_series(std::iter::once(Rectangle::new([(p, y), (p + 1, y + 1)], color.filled()))).map_err(chart_err)?;
                if count > 0 {
                    let text_color = if shade > 0.6 { WHITE } else { BLACK };
                    let style = ("sans-serif", 11).into_font().color(&text_color);
                    chart.draw_series(std::iter::once(Text::new(count.to_string(), (p, y + 1), style))).map_err(chart_err)?;
                }
            }
        }
        root.present().map_err(chart_err)?;
    }
    Ok(svg)
}

/// Bars of SQNR (dB) per int8 tensor, in graph order.
pub fn layers_svg(layers: &[LayerError]) -> Result<String, ReportError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_err)?;
        let top = layers.iter().map(|l| l.sqnr_db).filter(|v| v.is_finite()).fold(10.0f64, f64::max) + 5.0;
        let mut chart = ChartBuilder::on(&root)
            .caption("int8 vs float per tensor: SQNR (dB, higher is better; under 20 dB hurts)", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..layers.len().max(1) as f64, 0.0..top)
            .map_err(chart_err)?;
        chart.configure_mesh().disable_x_mesh().x_desc("tensor, in graph order (names in the table)").draw().map_err(chart_err)?;
        chart
            .draw_series(layers.iter().enumerate().map(|(i, l)| {
                let v = if l.sqnr_db.is_finite() { l.sqnr_db } else { top };
                let color = if v < 20.0 { PALETTE[3] } else { PALETTE[0] };
                Rectangle::new([(i as f64 + 0.15, 0.0), (i as f64 + 0.85, v)], color.filled())
            }))
            .map_err(chart_err)?;
        root.present().map_err(chart_err)?;
    }
    Ok(svg)
}

fn markdown(title: &str, data: &str, metrics: &[Metrics], layers: Option<&[LayerError]>, charts: &[(String, String)]) -> String {
    let mut md = format!("# {title}\n\nDataset: `{data}`, {} images.\n\n", metrics.first().map_or(0, |m| m.images));
    md.push_str("| target | top-1 | top-5 | agreement with the first target | logits max abs error | RMSE | cosine |\n|---|---:|---:|---:|---:|---:|---:|\n");
    for m in metrics {
        let opt = |v: Option<f64>, d: usize| v.map_or("–".to_string(), |v| format!("{v:.d$}"));
        let e = m.logit_error.as_ref();
        let _ = writeln!(
            md,
            "| {} | {:.2}% | {} | {} | {} | {} | {} |",
            m.target,
            m.top1,
            opt(m.top5, 2) + if m.top5.is_some() { "%" } else { "" },
            opt(m.agreement, 2) + if m.agreement.is_some() { "%" } else { "" },
            e.map_or("–".into(), |e| format!("{:.4}", e.max_abs)),
            e.map_or("–".into(), |e| format!("{:.4}", e.rmse)),
            e.map_or("–".into(), |e| format!("{:.5}", e.cosine)),
        );
    }
    md.push_str("\n## Per-class top-1\n\n| class |");
    for m in metrics {
        let _ = write!(md, " {} |", m.target);
    }
    md.push_str("\n|---|");
    md.push_str(&"---:|".repeat(metrics.len()));
    md.push('\n');
    if let Some(first) = metrics.first() {
        for (c, class) in first.per_class.iter().enumerate() {
            let _ = write!(md, "| {} ({} images) |", class.class, class.images);
            for m in metrics {
                let _ = write!(md, " {:.1}% |", m.per_class[c].top1);
            }
            md.push('\n');
        }
    }
    for (file, caption) in charts {
        let _ = write!(md, "\n![{caption}]({file})\n");
    }
    if let Some(layers) = layers {
        md.push_str("\n## int8 error per tensor (quantization debugger)\n\n| tensor | op | SQNR dB | max abs error | max abs value | int8 step |\n|---|---|---:|---:|---:|---:|\n");
        for l in layers {
            let _ = writeln!(md, "| `{}` | {} | {:.1} | {:.4} | {:.4} | {:.5} |", l.layer, l.op, l.sqnr_db, l.max_abs_error, l.max_abs_value, l.step);
        }
    }
    md
}

/// Writes `report.md`, the SVG charts it links, and `report.html` (everything inline) into `dir`.
/// Returns the HTML path.
pub fn write(dir: &Path, title: &str, data: &str, metrics: &[Metrics], layers: Option<&[LayerError]>) -> Result<PathBuf, ReportError> {
    let io = |error| ReportError::Write { path: dir.display().to_string(), error };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut charts: Vec<(String, String, String)> = vec![("per-class.svg".into(), "Per-class top-1 per target".into(), per_class_svg(metrics)?)];
    for m in metrics {
        let file = format!("confusion-{}.svg", m.target.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_"));
        charts.push((file, format!("Confusion matrix, {}", m.target), confusion_svg(m)?));
    }
    if let Some(layers) = layers.filter(|l| !l.is_empty()) {
        charts.push(("int8-layers.svg".into(), "int8 error per tensor".into(), layers_svg(layers)?));
    }
    for (file, _, svg) in &charts {
        perch_runtime::plan::write_atomically(&dir.join(file), svg.as_bytes()).map_err(|e| ReportError::Chart(e.to_string()))?;
    }
    let links: Vec<(String, String)> = charts.iter().map(|(f, c, _)| (f.clone(), c.clone())).collect();
    let md = markdown(title, data, metrics, layers, &links);
    perch_runtime::plan::write_atomically(&dir.join("report.md"), md.as_bytes()).map_err(|e| ReportError::Chart(e.to_string()))?;
    // The HTML page: the Markdown tables as preformatted text, the charts inline.
    let escape = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let mut html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}pre{{background:#f6f8fa;padding:1em;overflow-x:auto}}</style></head><body><h1>{t}</h1>",
        t = escape(title)
    );
    let text_part = md.split("\n![").next().unwrap_or(&md);
    let _ = write!(html, "<pre>{}</pre>", escape(text_part.trim_start_matches(&format!("# {title}\n"))));
    for (_, caption, svg) in &charts {
        let _ = write!(html, "<h2>{}</h2>{svg}", escape(caption));
    }
    if let Some(layers_md) = md.split("\n## int8 error per tensor").nth(1) {
        let _ = write!(html, "<h2>int8 error per tensor</h2><pre>{}</pre>", escape(layers_md));
    }
    html.push_str("</body></html>\n");
    let path = dir.join("report.html");
    perch_runtime::plan::write_atomically(&path, html.as_bytes()).map_err(|e| ReportError::Chart(e.to_string()))?;
    Ok(path)
}
