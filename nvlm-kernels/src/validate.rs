//! Device-vs-CPU validation: runs an op on a device and on the f32 CPU reference with the same fresh random inputs,
//! and reports the error. Used by the GPU tests, `nvlm selftest` and the GPU bundle.

use nvlm_tensor::{DType, Device, Tensor};

use crate::cuda::{flash_kernel, set_flash_kernel, FlashKernel};

use crate::{
    add, add_rms_norm, add_scaled_channels, argmax, argmax_with_value, attention, batched_matmul, cast,
    concat, embedding, gather_rows, gelu, gemv, layer_norm, matmul, mul, paged_attention,
    paged_attention_rows, paged_write, pixel_shuffle, qkv_qk_norm, repetition_penalty, rms_norm,
    rms_norm_partial_stats, rms_norm_with_sum_squares, rope_qkv, rope_qkv_paged, rotary_embedding,
    row_sum_squares, sample, scale, silu_mul, softmax, split, transpose_last2, unfold_patches, uniform,
    AttentionMask, BlockTable, PagedRows, Result, RowSource, SamplingParams,
};

/// The outcome of one device-vs-reference comparison.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// Op name.
    pub op: &'static str,
    /// Input description (shapes, dtype).
    pub case: String,
    /// Largest absolute difference.
    pub max_abs: f64,
    /// Largest `|got - want| / max(|want|, rms(want))`: each element's error relative to its own size, floored at
    /// the reference's root-mean-square so that near-zero elements are judged against the typical size. A bf16
    /// rounding that lands one unit in the last place apart is at most 2^-7 of the element, wherever the element
    /// sits in the output's range (an error relative to the rms alone failed causal attention, whose first rows are
    /// several times larger than the rest, on one-ulp differences).
    pub max_rel: f64,
    /// The tolerance applied to `max_rel`.
    pub tolerance: f64,
}

impl CheckReport {
    /// True when within tolerance.
    pub fn passed(&self) -> bool {
        self.max_rel.is_finite() && self.max_rel <= self.tolerance
    }

    /// One table row: `op case max_abs max_rel tolerance PASS|FAIL`.
    pub fn row(&self) -> String {
        format!(
            "{:<10} {:<34} {:>11.3e} {:>11.3e} {:>9.1e} {}",
            self.op,
            self.case,
            self.max_abs,
            self.max_rel,
            self.tolerance,
            if self.passed() { "PASS" } else { "FAIL" }
        )
    }

    /// The header matching [`CheckReport::row`].
    pub fn header() -> String {
        format!(
            "{:<10} {:<34} {:>11} {:>11} {:>9} verdict",
            "op", "case", "max_abs", "max_rel", "tol"
        )
    }
}

/// Fresh pseudo-random values in `[-1, 1)` from `seed` (the sampler's counter RNG).
pub fn random_values(seed: u64, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| uniform(seed, i as u64, 0x5EED) * 2.0 - 1.0)
        .collect()
}

fn random_tensor(seed: u64, shape: &[usize], dtype: DType) -> Result<Tensor> {
    let n = shape.iter().product();
    Ok(Tensor::from_vec(random_values(seed, n), shape)?.to_dtype(dtype)?)
}

fn compare(
    op: &'static str,
    case: String,
    got: &Tensor,
    want: &Tensor,
    tolerance: f64,
) -> Result<CheckReport> {
    let (g, w) = (got.to_f64_vec()?, want.to_f64_vec()?);
    let rms = (w.iter().map(|v| v * v).sum::<f64>() / w.len().max(1) as f64)
        .sqrt()
        .max(f64::MIN_POSITIVE);
    // (largest absolute error, largest error relative to max(|want|, rms)); a length mismatch or a NaN is infinite.
    let (max_abs, max_rel) = if g.len() != w.len() {
        (f64::INFINITY, f64::INFINITY)
    } else {
        g.iter().zip(&w).fold((0.0f64, 0.0f64), |(abs, rel), (a, b)| {
            let e = if a.is_nan() || b.is_nan() {
                f64::INFINITY
            } else {
                (a - b).abs()
            };
            (abs.max(e), rel.max(e / b.abs().max(rms)))
        })
    };
    Ok(CheckReport {
        op,
        case,
        max_abs,
        max_rel,
        tolerance,
    })
}

/// Which prefill attention kernels a pass of the attention checks runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// The kernel in use ([`flash_kernel`]).
    InUse,
    /// On a GPU, the opt-in Hopper kernels other than the one in use, where they take the case: `wgmma` and the
    /// warp-specialised TMA kernel (case names suffixed).
    OptIn,
}

/// Environment variable: whether [`run_all`] also checks the opt-in Hopper attention kernels, so that a GPU run
/// reports them before either is made the default. Unset or `0`: no. `1`: after every other check (a kernel that
/// faults or traps leaves the process's CUDA context unusable, so it must come last). `only`: those checks alone
/// (the GPU bundle runs them in a process of their own).
pub const OPT_IN_ENV: &str = "NVLM_CHECK_OPT_IN";

/// The kernels a case of `tq` queries at head_dim `d` is checked with in `pass` on `device`, with the suffix of
/// their case names.
fn prefill_kernels(
    device: Device,
    tq: usize,
    d: usize,
    pass: Pass,
) -> Vec<(Option<FlashKernel>, &'static str)> {
    if pass == Pass::InUse {
        return vec![(None, "")];
    }
    let mut kernels = Vec::new();
    if matches!(device, Device::Cuda(_)) && tq >= 16 && (d == 64 || d == 128) {
        let hopper = [(FlashKernel::Wgmma, " wgmma"), (FlashKernel::Tma, " tma")];
        for (kernel, suffix) in hopper {
            if flash_kernel() != kernel {
                kernels.push((Some(kernel), suffix));
            }
        }
    }
    kernels
}

/// Sets the prefill attention kernel until dropped, then puts the previous one back.
struct FlashKernelScope(FlashKernel);

impl FlashKernelScope {
    fn set(kernel: FlashKernel) -> FlashKernelScope {
        let previous = flash_kernel();
        set_flash_kernel(kernel);
        FlashKernelScope(previous)
    }
}

impl Drop for FlashKernelScope {
    fn drop(&mut self) {
        set_flash_kernel(self.0);
    }
}

/// bf16 keeps 8 significant bits: one rounding of the output is 2^-9 relative; allow a few.
const BF16_TOL: f64 = 1.0 / 64.0;
/// Attention on the tensor cores rounds the softmax weights to bf16 before multiplying them with V, as FlashAttention
/// and HF's eager bf16 attention do: a further 2^-9 relative on each term, which early causal rows (a few keys of
/// opposite sign) turn into several output ulps against the f32 reference. A misplaced fragment is off by O(1).
const ATTENTION_TOL: f64 = 1.0 / 32.0;
/// f32 results that differ only by summation order.
const F32_TOL: f64 = 1e-4;

/// RMSNorm of `[rows, width]` on `device` vs the CPU.
pub fn check_rms_norm(
    device: Device,
    rows: usize,
    width: usize,
    dtype: DType,
    seed: u64,
) -> Result<CheckReport> {
    let x = random_tensor(seed, &[rows, width], dtype)?;
    let w = random_tensor(seed + 1, &[width], dtype)?;
    let want = rms_norm(&x, &w, 1e-6)?;
    let got = rms_norm(&x.to_device(device)?, &w.to_device(device)?, 1e-6)?;
    let tol = if dtype == DType::F32 { 1e-5 } else { BF16_TOL };
    compare("rms_norm", format!("[{rows},{width}] {dtype}"), &got, &want, tol)
}

/// `silu(gate)·up` of `rows` rows of `[gate | up]` (`2·width` each) on `device` vs the CPU.
pub fn check_silu_mul(
    device: Device,
    rows: usize,
    width: usize,
    dtype: DType,
    seed: u64,
) -> Result<CheckReport> {
    let gate_up = random_tensor(seed, &[rows, 2 * width], dtype)?;
    let want = silu_mul(&gate_up)?;
    let got = silu_mul(&gate_up.to_device(device)?)?;
    let tol = if dtype == DType::F32 { 1e-5 } else { BF16_TOL };
    compare(
        "silu_mul",
        format!("[{rows},2x{width}] {dtype}"),
        &got,
        &want,
        tol,
    )
}

/// `x[m,k]·w[n,k]ᵀ (+bias)` in bf16 on `device` vs the f32 CPU reference on the same bf16 inputs. With
/// `view_offset > 0`, `x` is a leading-dimension view starting that many rows into a larger tensor (an unaligned
/// operand for cuBLASLt when `view_offset·k·2` is not a multiple of 256).
pub fn check_matmul(
    device: Device,
    shape: (usize, usize, usize),
    bias: bool,
    view_offset: usize,
    seed: u64,
) -> Result<CheckReport> {
    check_product(device, "matmul", matmul, shape, bias, view_offset, seed)
}

/// `gemv` (the decode-size kernel, at most 8 rows) on `device` vs the CPU's `matmul`.
pub fn check_gemv(
    device: Device,
    shape: (usize, usize, usize),
    bias: bool,
    view_offset: usize,
    seed: u64,
) -> Result<CheckReport> {
    check_product(device, "gemv", gemv, shape, bias, view_offset, seed)
}

/// `product(x, w, bias)` on `device` vs the CPU's f32 `matmul`, `x` a view at row `view_offset` of a larger tensor.
fn check_product(
    device: Device,
    op: &'static str,
    product: fn(&Tensor, &Tensor, Option<&Tensor>) -> Result<Tensor>,
    (m, n, k): (usize, usize, usize),
    bias: bool,
    view_offset: usize,
    seed: u64,
) -> Result<CheckReport> {
    let x = random_tensor(seed, &[m + view_offset, k], DType::BF16)?;
    let (x, x_device) = (
        x.narrow0(view_offset, m)?,
        x.to_device(device)?.narrow0(view_offset, m)?,
    );
    let w = random_tensor(seed + 1, &[n, k], DType::BF16)?;
    let b = random_tensor(seed + 2, &[n], DType::BF16)?;
    let want = matmul(&x.to_dtype(DType::F32)?, &w, bias.then_some(&b))?;
    let bd = b.to_device(device)?;
    let got = product(&x_device, &w.to_device(device)?, bias.then_some(&bd))?;
    let view = if view_offset > 0 {
        format!(" view@{view_offset}")
    } else {
        String::new()
    };
    let case = format!("[{m},{k}]x[{n},{k}]T{}{view}", if bias { "+b" } else { "" });
    // The output is rounded to bf16 once, but an element near zero carries the rounding of k products larger than
    // itself (judged against the rms): allow twice the bf16 bound.
    compare(op, case, &got, &want, 2.0 * BF16_TOL)
}

/// `batched_matmul` on `device` vs the CPU, both layouts of the right operand (`[b, n, k]` transposed, `[b, k, n]`).
pub fn check_batched_matmul(
    device: Device,
    (batch, m, n, k): (usize, usize, usize, usize),
    seed: u64,
) -> Result<Vec<CheckReport>> {
    let a = random_tensor(seed, &[batch, m, k], DType::BF16)?;
    let mut reports = Vec::new();
    for transpose_b in [true, false] {
        let shape = if transpose_b { [batch, n, k] } else { [batch, k, n] };
        let b = random_tensor(seed + 1, &shape, DType::BF16)?;
        let case = format!(
            "[{batch},{m},{k}]x{shape:?}{}",
            if transpose_b { "T" } else { "" }
        );
        reports.push(check_with(
            device,
            "bmm",
            case,
            &[a.clone(), b],
            2.0 * BF16_TOL,
            |t| batched_matmul(&t[0], &t[1], transpose_b),
        )?);
    }
    Ok(reports)
}

/// f32 -> bf16 -> f32 on `device` vs the CPU conversion (must be exact).
pub fn check_cast(device: Device, n: usize, seed: u64) -> Result<CheckReport> {
    let x = random_tensor(seed, &[n], DType::F32)?;
    let want = x.to_dtype(DType::BF16)?;
    let on_device = cast(&x.to_device(device)?, DType::BF16)?;
    let back = cast(&on_device, DType::F32)?;
    let mut report = compare("cast", format!("[{n}] f32->bf16->f32"), &back, &want, 0.0)?;
    report.tolerance = 0.0;
    Ok(report)
}

/// Runs `f` on host `inputs` and on their copies on `device`, and compares the outputs.
fn check_with(
    device: Device,
    op: &'static str,
    case: String,
    inputs: &[Tensor],
    tolerance: f64,
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) -> Result<CheckReport> {
    let want = f(inputs)?;
    let on_device = inputs
        .iter()
        .map(|t| t.to_device(device))
        .collect::<Result<Vec<_>, _>>()?;
    let got = f(&on_device)?;
    compare(op, case, &got, &want, tolerance)
}

/// Attention over contiguous keys (bf16): the ViT's 1,025 tokens, causal GQA prefill (one chunk long enough for the
/// TMA kernel's ring to wrap), decode, small and odd head dims, chunks at an offset; with the kernels of `pass`.
fn check_attention(device: Device, seed: u64, pass: Pass) -> Result<Vec<CheckReport>> {
    let bf = DType::BF16;
    let mut reports = Vec::new();
    for (case, [batch, tq, tk, hq, hkv, d], mask) in [
        (
            "vit [1,1025,25,128]",
            [1, 1025, 1025, 25, 25, 128],
            AttentionMask::Bidirectional,
        ),
        (
            "prefill GQA 64/8 [1,300]",
            [1, 300, 300, 64, 8, 128],
            AttentionMask::Causal { query_offset: 0 },
        ),
        // Up to five 128-key tiles a block: the TMA kernel's three-slot ring wraps, and in the block of queries
        // 384..511 the first consumer sees four of the five (it releases the fifth without computing it).
        (
            "chunk 600 at 20, 2x[4/1,128]",
            [2, 600, 620, 4, 1, 128],
            AttentionMask::Causal { query_offset: 20 },
        ),
        (
            "decode 1 of 500, GQA 64/8",
            [1, 1, 500, 64, 8, 128],
            AttentionMask::Causal { query_offset: 499 },
        ),
        (
            "chunk 37 at 50, 2x[4/2,16]",
            [2, 37, 87, 4, 2, 16],
            AttentionMask::Causal { query_offset: 50 },
        ),
        (
            "bidir 2x[33,3/1,72]",
            [2, 33, 41, 3, 1, 72],
            AttentionMask::Bidirectional,
        ),
        (
            "chunk 70 at 80, 2x[4/2,64]",
            [2, 70, 150, 4, 2, 64],
            AttentionMask::Causal { query_offset: 80 },
        ),
    ] {
        let q = random_tensor(seed + 6, &[batch, tq, hq, d], bf)?;
        let k = random_tensor(seed + 7, &[batch, tk, hkv, d], bf)?;
        let v = random_tensor(seed + 8, &[batch, tk, hkv, d], bf)?;
        let scale = 1.0 / (d as f32).sqrt();
        for (kernel, suffix) in prefill_kernels(device, tq, d, pass) {
            let _scope = kernel.map(FlashKernelScope::set);
            reports.push(check_with(
                device,
                "attention",
                format!("{case}{suffix}"),
                &[q.clone(), k.clone(), v.clone()],
                ATTENTION_TOL,
                |t| attention(&t[0], &t[1], &t[2], mask, scale),
            )?);
        }
    }
    Ok(reports)
}

/// Elementwise ops, norms, softmax, RoPE, attention, embedding, the LLM's input gather and argmax in bf16.
pub fn check_other_ops(device: Device, seed: u64) -> Result<Vec<CheckReport>> {
    let bf = DType::BF16;
    let (x, y) = (
        random_tensor(seed, &[7, 3200], bf)?,
        random_tensor(seed + 1, &[7, 3200], bf)?,
    );
    let v = random_tensor(seed + 2, &[3200], bf)?;
    let b = random_tensor(seed + 3, &[3200], bf)?;
    let mut reports = vec![
        check_with(
            device,
            "add",
            "[7,3200] bf16".into(),
            &[x.clone(), y.clone()],
            BF16_TOL,
            |t| add(&t[0], &t[1]),
        )?,
        check_with(
            device,
            "mul",
            "[7,3200] bf16".into(),
            &[x.clone(), y.clone()],
            BF16_TOL,
            |t| mul(&t[0], &t[1]),
        )?,
        check_with(
            device,
            "scale",
            "[7,3200] bf16".into(),
            std::slice::from_ref(&x),
            BF16_TOL,
            |t| scale(&t[0], 0.37),
        )?,
        check_with(
            device,
            "add_scale_ch",
            "[7,3200]+[7,3200]x[3200] bf16".into(),
            &[y.clone(), x.clone(), v.clone()],
            BF16_TOL,
            |t| add_scaled_channels(&t[0], &t[1], &t[2]),
        )?,
        check_with(
            device,
            "gelu",
            "[7,3200] bf16".into(),
            std::slice::from_ref(&x),
            BF16_TOL,
            |t| gelu(&t[0]),
        )?,
        check_with(
            device,
            "layer_norm",
            "[7,3200] bf16".into(),
            &[x.clone(), v.clone(), b.clone()],
            BF16_TOL,
            |t| layer_norm(&t[0], &t[1], &t[2], 1e-5),
        )?,
        check_with(
            device,
            "add_rms",
            "[7,3200] bf16 normed".into(),
            &[x.clone(), y.clone(), v.clone()],
            BF16_TOL,
            |t| Ok(add_rms_norm(&t[0], &t[1], &t[2], 1e-6)?.0),
        )?,
        check_with(
            device,
            "add_rms",
            "[7,3200] bf16 sum".into(),
            &[x.clone(), y.clone(), v.clone()],
            BF16_TOL,
            |t| Ok(add_rms_norm(&t[0], &t[1], &t[2], 1e-6)?.1),
        )?,
    ];
    let logits = random_tensor(seed + 4, &[5, 1025], DType::F32)?;
    let logits = crate::scale(&logits, 8.0)?.to_dtype(bf)?;
    reports.push(check_with(
        device,
        "softmax",
        "[5,1025] bf16".into(),
        &[logits],
        BF16_TOL,
        |t| softmax(&t[0]),
    )?);
    let q = random_tensor(seed + 5, &[33, 8, 128], bf)?;
    let positions = Tensor::from_vec((0..33).map(|p| p * 97).collect::<Vec<i32>>(), &[33])?;
    let inv_freq = crate::RopeConfig {
        theta: 1e6,
        head_dim: 128,
        dynamic: None,
    }
    .inv_freq(4096);
    reports.push(check_with(
        device,
        "rope",
        "[33,8,128] bf16".into(),
        &[q, positions.clone()],
        BF16_TOL,
        |t| rotary_embedding(&t[0], &t[1], &inv_freq),
    )?);
    // Qwen2-72B's fused projection at TP 8: 8 query heads, 1 KV head.
    let qkv = random_tensor(seed + 9, &[33, 10 * 128], bf)?;
    let freq = Tensor::from_vec(inv_freq.clone(), &[64])?;
    reports.push(check_with(
        device,
        "rope_qkv",
        "[33,(8+2x1)x128] bf16 (q|k|v)".into(),
        &[qkv, positions.clone(), freq],
        BF16_TOL,
        |t| {
            let [q, k, v] = rope_qkv(&t[0], &t[1], &t[2], 8, 1)?;
            concat(&[&q, &k, &v], 1)
        },
    )?);
    reports.extend(check_attention(device, seed, Pass::InUse)?);
    let table = random_tensor(seed + 9, &[1000, 256], bf)?;
    let ids = Tensor::from_vec(vec![3i32, 999, 0, 3, 512], &[5])?;
    reports.push(check_with(
        device,
        "embedding",
        "5 of [1000,256] bf16".into(),
        &[ids, table],
        0.0,
        |t| embedding(&t[0], &t[1]),
    )?);
    // The LLM's input: token rows with image rows spliced in (and a vocabulary-parallel zero row).
    let table = random_tensor(seed + 13, &[1000, 256], bf)?;
    let image = random_tensor(seed + 14, &[3, 256], bf)?;
    use RowSource::{Extra, Table, Zero};
    let sources = [Table(999), Extra(0), Extra(1), Zero, Extra(2), Table(0), Table(3)];
    reports.push(check_with(
        device,
        "gather_rows",
        "7 of [1000,256] + [3,256] bf16".into(),
        &[table, image],
        0.0,
        |t| gather_rows(&sources, &t[0], Some(&t[1]), bf),
    )?);
    let vocab = random_tensor(seed + 12, &[3, 152064], bf)?;
    reports.push(check_with(
        device,
        "argmax",
        "[3,152064] bf16".into(),
        &[vocab],
        0.0,
        |t| argmax(&t[0]),
    )?);
    // A vocabulary-parallel rank's slice (TP 8: 19,008 ids from 57,024): its best (value, id) pair.
    reports.push(check_with(
        device,
        "argmax_val",
        "[3,19008] bf16 from id 57024".into(),
        &[random_tensor(seed + 15, &[3, 19_008], bf)?],
        0.0,
        |t| argmax_with_value(&t[0], 57_024),
    )?);
    Ok(reports)
}

/// InternViT's QK-norm pieces at its padded width (32 heads x 128, statistics over the 25 real heads): the
/// partial-statistics RMSNorm, and the tensor-parallel pair `row_sum_squares` + `rms_norm_with_sum_squares`.
pub fn check_qk_norm_ops(device: Device, seed: u64) -> Result<Vec<CheckReport>> {
    let bf = DType::BF16;
    let x = random_tensor(seed, &[9, 4096], bf)?;
    let w = random_tensor(seed + 1, &[4096], bf)?;
    let sums = random_tensor(seed + 2, &[9], DType::F32)?.to_f32_vec()?;
    let sums = Tensor::from_vec(sums.iter().map(|v| 3000.0 * (v + 1.5)).collect(), &[9])?;
    let qkv = random_tensor(seed + 3, &[9, 3 * 4096], bf)?;
    let wk = random_tensor(seed + 4, &[4096], bf)?;
    Ok(vec![
        check_with(
            device,
            "rms_part",
            "[9,4096] stats 3200 bf16".into(),
            &[x.clone(), w.clone()],
            BF16_TOL,
            |t| rms_norm_partial_stats(&t[0], &t[1], 1e-6, 3200),
        )?,
        check_with(
            device,
            "sum_sq",
            "[9,4096] ch 128..3328 bf16".into(),
            std::slice::from_ref(&x),
            F32_TOL,
            |t| row_sum_squares(&t[0], 128, 3200),
        )?,
        check_with(
            device,
            "rms_given",
            "[9,4096] over 3200 bf16".into(),
            &[x, w.clone(), sums],
            BF16_TOL,
            |t| rms_norm_with_sum_squares(&t[0], &t[1], 1e-6, &t[2], 3200),
        )?,
        check_with(
            device,
            "qkv_qk_norm",
            "[9,3x4096] stats 3200 bf16 (q|k|v)".into(),
            &[qkv, w, wk],
            BF16_TOL,
            |t| {
                let [q, k, v] = qkv_qk_norm(&t[0], &t[1], &t[2], 1e-6, 3200)?;
                concat(&[&q, &k, &v], 1)
            },
        )?,
    ])
}

/// The data-movement ops (exact copies: tolerance 0): concat and split along every kind of dimension, the
/// last-two-dims transpose, pixel shuffle and patch unfold at NVLM-D's tile geometry.
pub fn check_layout_ops(device: Device, seed: u64) -> Result<Vec<CheckReport>> {
    let bf = DType::BF16;
    let (a, b) = (
        random_tensor(seed, &[2, 5, 3], bf)?,
        random_tensor(seed + 1, &[2, 4, 3], bf)?,
    );
    let qkv = random_tensor(seed + 2, &[7, 3 * 416], bf)?;
    let rows = random_tensor(seed + 3, &[3, 33, 65], DType::F32)?;
    let grid = random_tensor(seed + 4, &[3, 32, 32, 320], bf)?;
    let pixels = random_tensor(seed + 5, &[2, 3, 448, 448], bf)?;
    let mut reports = vec![
        check_with(
            device,
            "concat",
            "[2,5,3]+[2,4,3] dim 1 bf16".into(),
            &[a.clone(), b],
            0.0,
            |t| concat(&[&t[0], &t[1]], 1),
        )?,
        check_with(
            device,
            "concat",
            "3x[2,5,3] dim 0 bf16".into(),
            std::slice::from_ref(&a),
            0.0,
            |t| concat(&[&t[0], &t[0], &t[0]], 0),
        )?,
        check_with(device, "transpose", "[3,33,65] f32".into(), &[rows], 0.0, |t| {
            transpose_last2(&t[0])
        })?,
        check_with(
            device,
            "pix_shuf",
            "[3,32,32,320] bf16".into(),
            &[grid],
            0.0,
            |t| pixel_shuffle(&t[0]),
        )?,
    ];
    for patch in [14, 28] {
        reports.push(check_with(
            device,
            "unfold",
            format!("[2,3,448,448] p{patch} bf16"),
            std::slice::from_ref(&pixels),
            0.0,
            |t| unfold_patches(&t[0], patch),
        )?);
    }
    for (i, name) in ["q", "k", "v"].into_iter().enumerate() {
        reports.push(check_with(
            device,
            "split",
            format!("[7,1248] last dim, {name} bf16"),
            std::slice::from_ref(&qkv),
            0.0,
            move |t| Ok(split(&t[0], 1, &[416, 416, 416])?.remove(i)),
        )?);
    }
    Ok(reports)
}

/// The paged checks' geometry: blocks of 16 positions in a pool of 40, a 90-position sequence, Qwen2-72B's 8 KV heads
/// x 128 and 64 query heads: `(block_size, pool, len, hkv, d, hq)`.
const PAGED: (usize, usize, usize, usize, usize, usize) = (16, 40, 90, 8, 128, 64);
/// The sequence's blocks, scattered over the pool.
const PAGED_BLOCKS: [usize; 6] = [7, 2, 39, 11, 0, 23];

/// The sequence's keys and values (`[90, 8, 128]` bf16) from `seed`.
fn paged_keys_values(seed: u64) -> Result<(Tensor, Tensor)> {
    let (_, _, len, hkv, d, _) = PAGED;
    Ok((
        random_tensor(seed, &[len, hkv, d], DType::BF16)?,
        random_tensor(seed + 1, &[len, hkv, d], DType::BF16)?,
    ))
}

/// The pool holding `rows` at the sequence's positions after two appends (0..60, then 60..90, as prefill then
/// decode write), zeros elsewhere.
fn paged_cache(rows: &Tensor) -> Result<Tensor> {
    let (block_size, pool, _, hkv, d, _) = PAGED;
    let table = BlockTable::new(&PAGED_BLOCKS, block_size, rows.device())?;
    let mut cache = Tensor::zeros(&[pool * block_size, hkv, d], DType::BF16, rows.device())?;
    paged_write(&mut cache, &rows.narrow0(0, 60)?, &table, 0)?;
    paged_write(&mut cache, &rows.narrow0(60, 30)?, &table, 60)?;
    Ok(cache)
}

/// Causal attention over the paged sequence for a decode step and prefill chunks of 7 and 40 queries at its end,
/// with the kernels of `pass`.
fn check_paged_prefill(device: Device, seed: u64, pass: Pass) -> Result<Vec<CheckReport>> {
    let (block_size, _, len, _, d, hq) = PAGED;
    let blocks = PAGED_BLOCKS;
    let (keys, values) = paged_keys_values(seed)?;
    let mut reports = Vec::new();
    for (case, t) in [
        ("decode 1 of 90, GQA 64/8", 1),
        ("chunk 7 of 90, GQA 64/8", 7),
        ("chunk 40 of 90, GQA 64/8", 40),
    ] {
        let q = random_tensor(seed + 2, &[t, hq, d], DType::BF16)?;
        for (kernel, suffix) in prefill_kernels(device, t, d, pass) {
            let _scope = kernel.map(FlashKernelScope::set);
            reports.push(check_with(
                device,
                "paged_att",
                format!("{case}{suffix}"),
                &[q.clone(), keys.clone(), values.clone()],
                ATTENTION_TOL,
                |x| {
                    let table = BlockTable::new(&blocks, block_size, x[0].device())?;
                    let (kc, vc) = (paged_cache(&x[1])?, paged_cache(&x[2])?);
                    paged_attention(&x[0], &kc, &vc, &table, len - t, 1.0 / (d as f32).sqrt())
                },
            )?);
        }
    }
    Ok(reports)
}

/// The paged KV cache at Qwen2-72B's KV geometry (8 heads x 128, blocks of 16, the blocks of a 90-position sequence
/// scattered over the pool): the in-place write (exact) and causal attention over the table for a decode step and a
/// chunk of 7 prefill queries (bf16).
pub fn check_paged_ops(device: Device, seed: u64) -> Result<Vec<CheckReport>> {
    let bf = DType::BF16;
    let (block_size, pool, len, hkv, d, hq) = PAGED;
    let blocks = PAGED_BLOCKS;
    let (keys, values) = paged_keys_values(seed)?;
    let filled = paged_cache;
    let mut reports = vec![check_with(
        device,
        "paged_wr",
        format!("{len} rows [8,128] bs16 bf16"),
        std::slice::from_ref(&keys),
        0.0,
        |t| filled(&t[0]),
    )?];
    // Rotated q returned, k and v stored through the slots of two sequences' rows (a prefill chunk and a decode row).
    let qkv = random_tensor(seed + 3, &[9, (hq + 2 * hkv) * d], bf)?;
    let freq = Tensor::from_vec(
        crate::RopeConfig {
            theta: 1e6,
            head_dim: d,
            dynamic: None,
        }
        .inv_freq(90),
        &[d / 2],
    )?;
    reports.push(check_with(
        device,
        "rope_paged",
        "[9,(64+2x8)x128] bf16 (q|k|v caches)".into(),
        &[qkv, freq],
        BF16_TOL,
        |t| {
            let other = BlockTable::new(&[5, 31], block_size, t[0].device())?;
            let table = BlockTable::new(&blocks, block_size, t[0].device())?;
            let rows = PagedRows::new(&[(&table, 82, 8), (&other, 20, 1)], t[0].device())?;
            let cache = || Tensor::zeros(&[pool * block_size, hkv, d], bf, t[0].device());
            let (mut kc, mut vc) = (cache()?, cache()?);
            let q = rope_qkv_paged(&t[0], &t[1], hq, hkv, &mut kc, &mut vc, &rows)?;
            // The written cache rows (the others stay zero: checked on the CPU), beside q.
            let written = rows.slots().iter().map(|&s| s as i32).collect::<Vec<_>>();
            let written = Tensor::from_vec(written, &[9])?.to_device(t[0].device())?;
            let cache_rows = |c: &Tensor| embedding(&written, &c.reshape(&[pool * block_size, hkv * d])?);
            concat(
                &[&q.reshape(&[9, hq * d])?, &cache_rows(&kc)?, &cache_rows(&vc)?],
                1,
            )
        },
    )?);
    // A decode step of three sequences in one launch: positions 89, 40 and 0 of the same cache.
    let q = random_tensor(seed + 4, &[3, hq, d], bf)?;
    reports.push(check_with(
        device,
        "paged_rows",
        "decode 3 rows at 89/40/0, GQA 64/8".into(),
        &[q, keys.clone(), values.clone()],
        BF16_TOL,
        |x| {
            let table = BlockTable::new(&blocks, block_size, x[0].device())?;
            let rows = PagedRows::new(&[(&table, 89, 1), (&table, 40, 1), (&table, 0, 1)], x[0].device())?;
            let (kc, vc) = (filled(&x[1])?, filled(&x[2])?);
            paged_attention_rows(&x[0], &kc, &vc, &rows, 1.0 / (d as f32).sqrt())
        },
    )?);
    reports.extend(check_paged_prefill(device, seed, Pass::InUse)?);
    // Split-K decode at a long context (positions 4,095 and 1,999 over a cache of random rows whose blocks run
    // backwards), 8 query heads a KV head; and the one-warp fallback for a GQA group wider than a block (64 query
    // heads on one KV head).
    let long = 4096;
    for (case, kv) in [
        ("decode at 4095/1999, GQA 64/8", hkv),
        ("decode at 4095/1999, GQA 64/1", 1),
    ] {
        let q = random_tensor(seed + 5, &[2, hq, d], bf)?;
        let (k_long, v_long) = (
            random_tensor(seed + 6, &[long, kv, d], bf)?,
            random_tensor(seed + 7, &[long, kv, d], bf)?,
        );
        reports.push(check_with(
            device,
            "paged_rows",
            case.into(),
            &[q, k_long, v_long],
            BF16_TOL,
            |x| {
                let blocks: Vec<usize> = (0..long / block_size).rev().collect();
                let table = BlockTable::new(&blocks, block_size, x[0].device())?;
                let rows = PagedRows::new(&[(&table, long - 1, 1), (&table, 1999, 1)], x[0].device())?;
                paged_attention_rows(&x[0], &x[1], &x[2], &rows, 1.0 / (d as f32).sqrt())
            },
        )?);
    }
    Ok(reports)
}

/// Temperature / top-k / top-p sampling over Qwen2's 152,064-entry vocabulary, 32 rows, on `device` vs the CPU: the
/// fraction of rows whose token differs (`max_rel` here). Both use the same draws and the same 2^-40 fixed-point weights
/// summed as integers; a GPU's `__expf` differs from the CPU's `expf` in the last bits, so a draw within that of a
/// boundary may pick the neighbour: allow 1 row in 16.
pub fn check_sampling(device: Device, seed: u64) -> Result<Vec<CheckReport>> {
    let rows = 32;
    // Logits spread like a trained model's (a few units), so that top-p keeps from one to thousands of tokens.
    let logits = Tensor::from_vec(
        random_values(seed, rows * 152_064)
            .into_iter()
            .map(|v| v * 6.0)
            .collect::<Vec<_>>(),
        &[rows, 152_064],
    )?
    .to_dtype(DType::BF16)?;
    let on_device = logits.to_device(device)?;
    let mut reports = Vec::new();
    for (temperature, top_k, top_p) in [(1.0, 0, 1.0), (0.7, 50, 1.0), (0.8, 0, 0.9), (1.3, 40, 0.5)] {
        let params = SamplingParams {
            temperature,
            top_k,
            top_p,
            seed: seed + 7,
        };
        let want = sample(&logits, &params, 3)?.to_vec::<i32>()?;
        let got = sample(&on_device, &params, 3)?.to_vec::<i32>()?;
        let differ = want.iter().zip(&got).filter(|(a, b)| a != b).count();
        reports.push(CheckReport {
            op: "sample",
            case: format!("32x152064 T{temperature} k{top_k} p{top_p}"),
            max_abs: differ as f64,
            max_rel: differ as f64 / rows as f64,
            tolerance: 1.0 / 16.0,
        });
    }
    // The repetition penalty on one row (duplicate and out-of-range ids included): an exact edit of the copy.
    let context: Vec<u32> = vec![5, 151_000, 5, 77, 200_000, 0, 151_000];
    reports.push(check_with(
        device,
        "rep_pen",
        "1x152064 bf16, 7 ids".into(),
        &[logits.narrow0(0, 1)?],
        0.0,
        |t| repetition_penalty(&t[0], &context, 1.3),
    )?);
    Ok(reports)
}

/// Every check at the shapes that matter for NVLM-D (hidden 3200 / 8192, FFN 12800 / 29568) and awkward ones, with
/// the kernels in use; then, or instead, the opt-in Hopper attention kernels as [`OPT_IN_ENV`] says.
pub fn run_all(device: Device) -> Result<Vec<CheckReport>> {
    match std::env::var(OPT_IN_ENV).as_deref() {
        Ok("only") => run_opt_in(device),
        Ok("1") => {
            let mut reports = run_in_use(device)?;
            reports.extend(run_opt_in(device)?);
            Ok(reports)
        }
        _ => run_in_use(device),
    }
}

/// Every check with the kernels in use.
fn run_in_use(device: Device) -> Result<Vec<CheckReport>> {
    let mut reports = Vec::new();
    for (rows, width) in [(1, 1), (3, 33), (1025, 3200), (7, 8192)] {
        reports.push(check_rms_norm(device, rows, width, DType::BF16, 11)?);
    }
    reports.push(check_rms_norm(device, 5, 3200, DType::F32, 12)?);
    for (rows, width) in [(1, 1), (3, 257), (3, 29568)] {
        reports.push(check_silu_mul(device, rows, width, DType::BF16, 13)?);
    }
    reports.push(check_silu_mul(device, 4, 250, DType::F32, 14)?);
    for (shape, bias, view_offset) in [
        ((1, 1, 1), false, 0),
        ((5, 33, 65), true, 0),
        ((5, 33, 65), true, 3),
        ((1, 8192, 8192), false, 0),
        ((256, 1280, 3200), true, 0),
        ((17, 29568, 64), true, 0),
    ] {
        reports.push(check_matmul(device, shape, bias, view_offset, 15)?);
    }
    for (shape, bias, view_offset) in [
        ((1, 8192, 8192), false, 0),
        ((8, 1280, 3200), true, 0),
        ((3, 1000, 64), true, 1),
        ((5, 33, 136), false, 2),
        ((7, 29568, 64), true, 0),
    ] {
        reports.push(check_gemv(device, shape, bias, view_offset, 23)?);
    }
    reports.push(check_cast(device, 4097, 16)?);
    for shape in [(1, 1, 1, 1), (3, 7, 5, 64), (4, 300, 200, 128)] {
        reports.extend(check_batched_matmul(device, shape, 21)?);
    }
    reports.extend(check_other_ops(device, 17)?);
    reports.extend(check_layout_ops(device, 18)?);
    reports.extend(check_qk_norm_ops(device, 19)?);
    reports.extend(check_paged_ops(device, 20)?);
    reports.extend(check_sampling(device, 22)?);
    Ok(reports)
}

/// The opt-in Hopper attention kernels on [`run_all`]'s attention cases (the same seeds), on a GPU.
fn run_opt_in(device: Device) -> Result<Vec<CheckReport>> {
    let mut reports = check_attention(device, 17, Pass::OptIn)?;
    reports.extend(check_paged_prefill(device, 20, Pass::OptIn)?);
    Ok(reports)
}
