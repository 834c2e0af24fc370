//! The benchmark's output: a table on stdout, and (with `--json PATH`) one JSON object per row, written whole at the
//! end (temp file, then rename) for `bench_report.py` to set beside PyTorch's figures.

use std::path::PathBuf;

use serde_json::json;

use crate::cases::Case;

/// H200 dense bf16 matrix peak (datasheet, FLOP/s): the ceiling of compute-bound cases.
pub const BF16_PEAK_FLOPS: f64 = 989e12;

/// One measured (or extrapolated) figure.
pub struct Row {
    /// Stable name (a case's name, or a derived figure's).
    pub name: String,
    /// The shape in words, e.g. `1852 tokens, hidden 8192`.
    pub shape: String,
    /// Milliseconds.
    pub ms: f64,
    /// The least time the work could take (bytes / bandwidth or FLOPs / peak), when it has one.
    pub roofline_ms: Option<f64>,
    /// How the roofline was computed.
    pub basis: String,
}

/// Collects rows, prints each as it comes, writes the JSON lines at the end.
pub struct Report {
    json: Option<PathBuf>,
    lines: Vec<String>,
    bandwidth: Option<f64>,
}

impl Report {
    /// Prints the table's header.
    pub fn new(json: Option<PathBuf>) -> Report {
        println!(
            "{:<44} {:>11} {:>11} {:>7}  basis",
            "case", "ms", "roofline", "% roof"
        );
        Report {
            json,
            lines: Vec::new(),
            bandwidth: None,
        }
    }

    /// Records the measured device copy bandwidth (bytes read + written per second).
    pub fn set_bandwidth(&mut self, bytes_per_s: f64) {
        self.bandwidth = Some(bytes_per_s);
        println!(
            "{:<44} {:>11.1} GB/s (read + written; the memory ceiling below)",
            "copy bandwidth",
            bytes_per_s / 1e9
        );
        self.lines
            .push(json!({"name": "copy-bandwidth", "gb_per_s": bytes_per_s / 1e9}).to_string());
    }

    /// The least time to read `bytes` once at the measured copy bandwidth (4.3 TB/s before it is measured).
    pub fn memory_roofline_ms(&self, bytes: f64) -> f64 {
        bytes / self.bandwidth.unwrap_or(4.3e12) * 1e3
    }

    /// The least time for `flops` at the bf16 matrix peak.
    pub fn compute_roofline_ms(flops: f64) -> f64 {
        flops / BF16_PEAK_FLOPS * 1e3
    }

    /// Prints and keeps one row.
    pub fn add(&mut self, row: Row) {
        let (roof, pct) = match row.roofline_ms {
            Some(r) => (format!("{r:.3}"), format!("{:.0}%", 100.0 * r / row.ms)),
            None => (String::new(), String::new()),
        };
        println!(
            "{:<44} {:>11.3} {:>11} {:>7}  {}",
            row.name, row.ms, roof, pct, row.basis
        );
        self.lines.push(
            json!({"name": row.name, "shape": row.shape, "ms": row.ms, "roofline_ms": row.roofline_ms,
                   "basis": row.basis})
            .to_string(),
        );
    }

    /// Reports a layer (the two-layer model's time minus the one-layer model's, `ms`) and the whole model of `layers`
    /// layers extrapolated from it, named `whole`.
    #[allow(clippy::too_many_arguments)]
    pub fn layer_and_model(
        &mut self,
        case: &Case,
        shape: String,
        ms: [f64; 2],
        layers: usize,
        roofline: f64,
        basis: String,
        whole: String,
        whole_basis: String,
    ) {
        let layer = ms[1] - ms[0];
        self.add(Row {
            name: case.name.clone(),
            shape: shape.clone(),
            ms: layer,
            roofline_ms: Some(roofline),
            basis,
        });
        self.add(Row {
            name: whole,
            shape,
            ms: ms[0] + (layers - 1) as f64 * layer,
            roofline_ms: Some(layers as f64 * roofline),
            basis: whole_basis,
        });
    }

    /// Writes the JSON lines (when asked for).
    pub fn finish(self) -> anyhow::Result<()> {
        if let Some(path) = self.json {
            let tmp = path.with_extension("partial");
            std::fs::write(&tmp, self.lines.join("\n") + "\n")?;
            std::fs::rename(&tmp, &path)?;
        }
        Ok(())
    }
}
