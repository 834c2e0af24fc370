//! Preprocessing throughput (plain harness): decode + tile + normalise the fixture photos, on one thread and on all
//! threads, beside the Python reference (Pillow + torchvision, `bench/reference_preprocess.py`) on one core when
//! `python3` (or `$NVLM_BENCH_PYTHON`) can import PIL. Run with `cargo xtask bench`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use nvlm_tiling::{load_tiles, pixel_values, TilingConfig, TILE_SIZE};

const SECONDS: f64 = 2.0;

fn fixtures() -> PathBuf {
    std::env::var_os("NVLM_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"))
}

fn images_per_second(path: &std::path::Path, config: &TilingConfig) -> f64 {
    let run = || {
        let tiles = load_tiles(path, config).expect("fixture image preprocesses");
        std::hint::black_box(pixel_values(&tiles.pixels, TILE_SIZE));
    };
    run();
    let (start, mut count) = (Instant::now(), 0u32);
    while start.elapsed() < Duration::from_secs_f64(SECONDS) {
        run();
        count += 1;
    }
    count as f64 / start.elapsed().as_secs_f64()
}

fn reference(paths: &[PathBuf]) -> Option<Vec<f64>> {
    let python = std::env::var("NVLM_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/reference_preprocess.py");
    let output = Command::new(&python)
        .arg(&script)
        .arg(SECONDS.to_string())
        .args(paths)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .ok()?;
    if !output.status.success() {
        println!(
            "(reference skipped: `{python}` could not run it: {})",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        return None;
    }
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    Some(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect(),
    )
}

fn main() {
    let names = ["astronaut/input.png", "coffee_jpeg/input.jpg", "rocket/input.png"];
    let paths: Vec<PathBuf> = names.iter().map(|n| fixtures().join("tiling").join(n)).collect();
    if let Some(missing) = paths.iter().find(|p| !p.is_file()) {
        println!(
            "fixture {} is missing: check out shared/ beside the repository",
            missing.display()
        );
        return;
    }
    let config = TilingConfig::default();
    let threads = rayon::current_num_threads();
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool");
    let single: Vec<f64> = paths
        .iter()
        .map(|p| one.install(|| images_per_second(p, &config)))
        .collect();
    let all: Vec<f64> = paths.iter().map(|p| images_per_second(p, &config)).collect();
    let reference = reference(&paths);
    println!(
        "{:<24} {:>12} {:>14} {:>16} {:>10}",
        "image",
        "1 thread/s",
        format!("{threads} threads/s"),
        "reference 1 core/s",
        "per core"
    );
    for (i, name) in names.iter().enumerate() {
        let (r, ratio) = match &reference {
            Some(r) if i < r.len() => (format!("{:.1}", r[i]), format!("{:.1}x", single[i] / r[i])),
            _ => ("-".into(), "-".into()),
        };
        println!(
            "{:<24} {:>12.1} {:>14.1} {:>16} {:>10}",
            name, single[i], all[i], r, ratio
        );
    }
}
