//! Every CPU op against an independent f64 reference, on random inputs with awkward shapes, plus the error paths.
// The references are written as plain index loops on purpose: they mirror the formulas, not the implementation.
#![allow(clippy::needless_range_loop, clippy::type_complexity)]

mod common;

use common::*;
use nvlm_kernels::*;
use nvlm_tensor::{DType, Device, Tensor};

fn ids(v: Vec<i64>) -> Tensor {
    let n = v.len();
    Tensor::from_vec(v, &[n]).unwrap()
}

#[test]
fn matmul_matches_f64_on_awkward_shapes() {
    let mut r = rng(1);
    // (m, n, k): single elements, odd sizes, a decode-like row (column-split path), many rows (row-split path).
    for &(m, n, k) in &[
        (1, 1, 1),
        (3, 5, 7),
        (17, 33, 65),
        (1, 300, 96),
        (2, 129, 31),
        (70, 9, 130),
    ] {
        let (x, xv) = random(&mut r, &[m, k], DType::F32);
        let (w, wv) = random(&mut r, &[n, k], DType::F32);
        let (b, bv) = random(&mut r, &[n], DType::F32);
        let y = matmul(&x, &w, Some(&b)).unwrap();
        assert_eq!(y.shape(), &[m, n]);
        assert_close(
            &format!("matmul {m}x{n}x{k}"),
            &y.to_f64_vec().unwrap(),
            &matmul_ref(&xv, &wv, Some(&bv), m, n, k),
            f32_tol(k),
            1e-6,
        );
        let y = matmul(&x, &w, None).unwrap();
        assert_close(
            "matmul no bias",
            &y.to_f64_vec().unwrap(),
            &matmul_ref(&xv, &wv, None, m, n, k),
            f32_tol(k),
            1e-6,
        );
    }
    // Rank-3 input, bf16 weights upcast under f32 activations.
    let (x, xv) = random(&mut r, &[2, 3, 16], DType::F32);
    let (w, wv) = random(&mut r, &[8, 16], DType::BF16);
    let y = matmul(&x, &w, None).unwrap();
    assert_eq!((y.shape(), y.dtype()), (&[2, 3, 8][..], DType::F32));
    assert_close(
        "matmul rank-3",
        &y.to_f64_vec().unwrap(),
        &matmul_ref(&xv, &wv, None, 6, 8, 16),
        f32_tol(16),
        1e-6,
    );
    // bf16 activations: one rounding of the f32 result.
    let (xb, xbv) = random(&mut r, &[4, 16], DType::BF16);
    let y = matmul(&xb, &w, None).unwrap();
    assert_eq!(y.dtype(), DType::BF16);
    assert_close(
        "matmul bf16",
        &y.to_f64_vec().unwrap(),
        &matmul_ref(&xbv, &wv, None, 4, 8, 16),
        1e-3,
        1.0 / 128.0,
    );
}

#[test]
fn matmul_rejects_bad_arguments() {
    let x = Tensor::from_vec(vec![0f32; 6], &[2, 3]).unwrap();
    let w = Tensor::from_vec(vec![0f32; 8], &[2, 4]).unwrap();
    assert!(matmul(&x, &w, None).is_err());
    let w = Tensor::from_vec(vec![0f32; 6], &[2, 3]).unwrap();
    let bad_bias = Tensor::from_vec(vec![0f32; 3], &[3]).unwrap();
    assert!(matmul(&x, &w, Some(&bad_bias)).is_err());
    let xi = Tensor::from_vec(vec![0i32; 6], &[2, 3]).unwrap();
    assert!(matmul(&xi, &w, None).is_err());
}

#[test]
fn batched_matmul_matches_f64_both_layouts() {
    let mut r = rng(2);
    let (batch, m, n, k) = (3, 5, 7, 9);
    let (a, av) = random(&mut r, &[batch, m, k], DType::F32);
    let (bt, btv) = random(&mut r, &[batch, n, k], DType::F32);
    let y = batched_matmul(&a, &bt, true).unwrap().to_f64_vec().unwrap();
    let mut want = Vec::new();
    for i in 0..batch {
        want.extend(matmul_ref(
            &av[i * m * k..][..m * k],
            &btv[i * n * k..][..n * k],
            None,
            m,
            n,
            k,
        ));
    }
    assert_close("bmm a·bᵀ", &y, &want, f32_tol(k), 1e-6);
    // b[k, n] = transpose of bt[n, k].
    let b = transpose_last2(&bt).unwrap();
    let y2 = batched_matmul(&a, &b, false).unwrap().to_f64_vec().unwrap();
    assert_close("bmm a·b", &y2, &want, f32_tol(k), 1e-6);
    assert!(batched_matmul(&a, &bt, false).is_err());
}

#[test]
fn rms_norm_follows_the_reference_order() {
    let mut r = rng(3);
    for &(rows, width) in &[(1, 1), (3, 7), (5, 64), (2, 1000)] {
        let (x, xv) = random(&mut r, &[rows, width], DType::F32);
        let (w, wv) = random(&mut r, &[width], DType::F32);
        let y = rms_norm(&x, &w, 1e-6).unwrap().to_f64_vec().unwrap();
        assert_close(
            "rms_norm f32",
            &y,
            &rms_norm_ref(&xv, &wv, 1e-6, width, width, |v| v),
            1e-5,
            1e-5,
        );
        // bf16: the normalised value is rounded to bf16 before the weight multiplies it, then rounded again.
        let (xb, xbv) = random(&mut r, &[rows, width], DType::BF16);
        let (wb, wbv) = random(&mut r, &[width], DType::BF16);
        let y = rms_norm(&xb, &wb, 1e-6).unwrap().to_f64_vec().unwrap();
        assert_close(
            "rms_norm bf16",
            &y,
            &rms_norm_ref(&xbv, &wbv, 1e-6, width, width, round_bf16),
            1e-6,
            1.0 / 128.0,
        );
    }
    let x = Tensor::from_vec(vec![0f32; 6], &[2, 3]).unwrap();
    let w = Tensor::from_vec(vec![0f32; 4], &[4]).unwrap();
    assert!(rms_norm(&x, &w, 1e-6).is_err());
}

#[test]
fn qk_norm_variance_over_real_channels_only() {
    let mut r = rng(4);
    // 5 heads of 4 stored padded to 7: statistics over the first 20 of 28 channels, every channel normalised.
    let (x, xv) = random(&mut r, &[3, 28], DType::F32);
    let (w, wv) = random(&mut r, &[28], DType::F32);
    let y = rms_norm_partial_stats(&x, &w, 1e-6, 20)
        .unwrap()
        .to_f64_vec()
        .unwrap();
    assert_close(
        "qk-norm",
        &y,
        &rms_norm_ref(&xv, &wv, 1e-6, 28, 20, |v| v),
        1e-5,
        1e-5,
    );
    assert!(rms_norm_partial_stats(&x, &w, 1e-6, 29).is_err());
    assert!(rms_norm_partial_stats(&x, &w, 1e-6, 0).is_err());

    // The same norm split over two ranks of 14 channels: rank 0 holds 14 real channels, rank 1 holds 6 real and 8
    // dummy; each sums the squares of its real channels, the sums add, each normalises its own channels.
    let (halves, w_halves) = (split(&x, 1, &[14, 14]).unwrap(), split(&w, 0, &[14, 14]).unwrap());
    let sums: Vec<Tensor> = [(0, 14), (0, 6)]
        .iter()
        .zip(&halves)
        .map(|(&(start, len), h)| row_sum_squares(h, start, len).unwrap())
        .collect();
    let want_sums: Vec<f64> = xv
        .chunks(28)
        .map(|row| row[..20].iter().map(|v| v * v).sum())
        .collect();
    let total = add(&sums[0], &sums[1]).unwrap();
    assert_close(
        "row sums of squares",
        &total.to_f64_vec().unwrap(),
        &want_sums,
        1e-5,
        1e-5,
    );
    let parts: Vec<Tensor> = halves
        .iter()
        .zip(&w_halves)
        .map(|(h, w)| rms_norm_with_sum_squares(h, w, 1e-6, &total, 20).unwrap())
        .collect();
    let joined = concat(&[&parts[0], &parts[1]], 1).unwrap();
    assert_close(
        "qk-norm from sharded statistics",
        &joined.to_f64_vec().unwrap(),
        &rms_norm_ref(&xv, &wv, 1e-6, 28, 20, |v| v),
        1e-5,
        1e-5,
    );
    assert!(row_sum_squares(&halves[0], 10, 5).is_err());
    assert!(rms_norm_with_sum_squares(&halves[0], &w_halves[0], 1e-6, &sums[0], 0).is_err());

    // The fused form: rows of [q | k | v], q and k normed (statistics over 20 of 28 channels), v copied.
    let (qkv, qkv_v) = random(&mut r, &[3, 3 * 28], DType::F32);
    let (wk, wk_v) = random(&mut r, &[28], DType::F32);
    let part = |p: usize| -> Vec<f64> {
        qkv_v
            .chunks(3 * 28)
            .flat_map(|row| row[p * 28..(p + 1) * 28].to_vec())
            .collect()
    };
    let [q, k, v] = qkv_qk_norm(&qkv, &w, &wk, 1e-6, 20).unwrap();
    for (name, got, want) in [
        ("fused q", &q, rms_norm_ref(&part(0), &wv, 1e-6, 28, 20, |v| v)),
        ("fused k", &k, rms_norm_ref(&part(1), &wk_v, 1e-6, 28, 20, |v| v)),
        ("fused v", &v, part(2)),
    ] {
        assert_eq!(got.shape(), [3, 28]);
        assert_close(name, &got.to_f64_vec().unwrap(), &want, 1e-5, 1e-5);
    }
    assert!(qkv_qk_norm(&x, &w, &wk, 1e-6, 20).is_err());
    assert!(qkv_qk_norm(&qkv, &w, &wk, 1e-6, 29).is_err());
}

#[test]
fn add_rms_norm_returns_norm_and_sum() {
    let mut r = rng(5);
    let (x, xv) = random(&mut r, &[4, 33], DType::F32);
    let (res, rv) = random(&mut r, &[4, 33], DType::F32);
    let (w, wv) = random(&mut r, &[33], DType::F32);
    let (y, sum) = add_rms_norm(&x, &res, &w, 1e-6).unwrap();
    let want_sum: Vec<f64> = xv.iter().zip(&rv).map(|(a, b)| a + b).collect();
    assert_close("residual sum", &sum.to_f64_vec().unwrap(), &want_sum, 1e-6, 1e-6);
    assert_close(
        "add_rms_norm",
        &y.to_f64_vec().unwrap(),
        &rms_norm_ref(&want_sum, &wv, 1e-6, 33, 33, |v| v),
        1e-5,
        1e-5,
    );
    let bad = Tensor::from_vec(vec![0f32; 33], &[1, 33]).unwrap();
    assert!(add_rms_norm(&x, &bad, &w, 1e-6).is_err());
}

#[test]
fn layer_norm_matches_f64() {
    let mut r = rng(6);
    for &(rows, width) in &[(1, 1), (4, 9), (3, 129)] {
        let v: Vec<f64> = values(&mut r, rows * width, 3.0)
            .iter()
            .map(|x| x + 0.5)
            .collect();
        let (x, xv) = tensor(&v, &[rows, width], DType::F32);
        let (w, wv) = random(&mut r, &[width], DType::F32);
        let (b, bv) = random(&mut r, &[width], DType::F32);
        let y = layer_norm(&x, &w, &b, 1e-5).unwrap().to_f64_vec().unwrap();
        assert_close(
            "layer_norm",
            &y,
            &layer_norm_ref(&xv, &wv, &bv, 1e-5, width),
            1e-5,
            1e-5,
        );
    }
}

#[test]
fn rope_rotates_by_position_times_frequency() {
    let mut r = rng(7);
    let (tokens, heads, d) = (5, 3, 8);
    let cfg = RopeConfig {
        theta: 10_000.0,
        head_dim: d,
        dynamic: None,
    };
    let (x, xv) = random(&mut r, &[tokens, heads, d], DType::F32);
    let positions = [0i64, 1, 7, 100, 4095];
    let inv = cfg.inv_freq(4096);
    let y = rotary_embedding(&x, &ids(positions.to_vec()), &inv)
        .unwrap()
        .to_f64_vec()
        .unwrap();
    let mut want = vec![0.0; xv.len()];
    for t in 0..tokens {
        for h in 0..heads {
            let base = (t * heads + h) * d;
            for i in 0..d / 2 {
                let angle = positions[t] as f64 / 10_000f64.powf(2.0 * i as f64 / d as f64);
                let (a, b) = (xv[base + i], xv[base + i + d / 2]);
                want[base + i] = a * angle.cos() - b * angle.sin();
                want[base + i + d / 2] = b * angle.cos() + a * angle.sin();
            }
        }
    }
    // Position 4095 in f32 carries ~2.4e-4 absolute angle error.
    assert_close("rope", &y, &want, 2e-3, 1e-5);
    let bad_pos = ids(vec![0, 1]);
    assert!(rotary_embedding(&x, &bad_pos, &inv).is_err());
    assert!(rotary_embedding(&x, &ids(positions.to_vec()), &inv[..3]).is_err());

    // The fused form: rows of q (3 heads), k (2 heads), v (2 heads); q and k rotated as above, v copied.
    let (qkv, qkv_v) = random(&mut r, &[tokens, 7 * d], DType::F32);
    let inv_t = Tensor::from_vec(inv.clone(), &[d / 2]).unwrap();
    let [q, k, v] = rope_qkv(&qkv, &ids(positions.to_vec()), &inv_t, 3, 2).unwrap();
    let heads_of = |first: usize, count: usize, rotate: bool, positions: &[i64]| -> Vec<f64> {
        let mut out = Vec::new();
        for t in 0..tokens {
            for h in first..first + count {
                let x = &qkv_v[(t * 7 + h) * d..(t * 7 + h + 1) * d];
                let mut y = x.to_vec();
                if rotate {
                    for i in 0..d / 2 {
                        let angle = positions[t] as f64 / 10_000f64.powf(2.0 * i as f64 / d as f64);
                        y[i] = x[i] * angle.cos() - x[i + d / 2] * angle.sin();
                        y[i + d / 2] = x[i + d / 2] * angle.cos() + x[i] * angle.sin();
                    }
                }
                out.extend(y);
            }
        }
        out
    };
    assert_eq!(
        (q.shape(), k.shape(), v.shape()),
        (&[5, 3, 8][..], &[5, 2, 8][..], &[5, 2, 8][..])
    );
    assert_close(
        "fused rope q",
        &q.to_f64_vec().unwrap(),
        &heads_of(0, 3, true, &positions),
        2e-3,
        1e-5,
    );
    assert_close(
        "fused rope k",
        &k.to_f64_vec().unwrap(),
        &heads_of(3, 2, true, &positions),
        2e-3,
        1e-5,
    );
    assert_eq!(v.to_f64_vec().unwrap(), heads_of(5, 2, false, &positions));
    assert!(rope_qkv(&qkv, &ids(positions.to_vec()), &inv_t, 3, 3).is_err());
    assert!(rope_qkv(&qkv, &ids(vec![0, 1]), &inv_t, 3, 2).is_err());

    // The paged form: q returned, k and v stored at each row's cache slot (rows of two sequences in one step),
    // each row rotated at its own position.
    let first = BlockTable::new(&[2, 0], 2, Device::Cpu).unwrap(); // positions 0..4 at slots 4, 5, 0, 1
    let second = BlockTable::new(&[5], 2, Device::Cpu).unwrap(); // positions 0..2 at slots 10, 11
    let rows = PagedRows::new(&[(&first, 1, 3), (&second, 0, 2)], Device::Cpu).unwrap();
    assert_eq!(rows.slots(), &[5, 0, 1, 10, 11]);
    assert_eq!(rows.positions(), &[1, 2, 3, 0, 1]);
    let row_positions = [1i64, 2, 3, 0, 1];
    let cache = || Tensor::zeros(&[12, 2, d], DType::F32, Device::Cpu).unwrap();
    let (mut kc, mut vc) = (cache(), cache());
    let q = rope_qkv_paged(&qkv, &inv_t, 3, 2, &mut kc, &mut vc, &rows).unwrap();
    let want_q = heads_of(0, 3, true, &row_positions);
    assert_close("paged rope q", &q.to_f64_vec().unwrap(), &want_q, 2e-3, 1e-5);
    let (want_k, want_v) = (
        heads_of(3, 2, true, &row_positions),
        heads_of(5, 2, false, &row_positions),
    );
    let (got_k, got_v) = (kc.to_f64_vec().unwrap(), vc.to_f64_vec().unwrap());
    let row = 2 * d;
    for slot in 0..12 {
        let (k_row, v_row) = (
            &got_k[slot * row..(slot + 1) * row],
            &got_v[slot * row..(slot + 1) * row],
        );
        match rows.slots().iter().position(|&s| s == slot) {
            Some(t) => {
                assert_close("paged rope k", k_row, &want_k[t * row..(t + 1) * row], 2e-3, 1e-5);
                assert_eq!(v_row, &want_v[t * row..(t + 1) * row], "v at slot {slot}");
            }
            None => assert!(
                k_row.iter().chain(v_row).all(|&x| x == 0.0),
                "slot {slot} untouched"
            ),
        }
    }
    // Slot 11 outside a 10-slot cache: an error, nothing written.
    let small = || Tensor::zeros(&[10, 2, d], DType::F32, Device::Cpu).unwrap();
    let (mut ks, mut vs) = (small(), small());
    assert!(rope_qkv_paged(&qkv, &inv_t, 3, 2, &mut ks, &mut vs, &rows).is_err());
    assert!(ks.to_f64_vec().unwrap().iter().all(|&x| x == 0.0));
    assert!(
        PagedRows::new(&[(&second, 1, 2)], Device::Cpu).is_err(),
        "position 2 has no block"
    );
}

#[test]
fn dynamic_ntk_base_matches_transformers() {
    // Values from the spec (transformers' _compute_dynamic_ntk_parameters with Qwen2-72B's config).
    let cfg = RopeConfig {
        theta: 1e6,
        head_dim: 128,
        dynamic: Some(DynamicNtk {
            factor: 3.0,
            original_max_positions: 32768,
        }),
    };
    assert_eq!(cfg.base_for(1), 1e6);
    assert_eq!(cfg.base_for(32768), 1e6);
    for (seq, want) in [(32769usize, 1.000093e6), (65536, 4.08899e6), (98304, 7.21959e6)] {
        let got = cfg.base_for(seq);
        assert!(
            (got - want).abs() / want < 2e-6,
            "seq {seq}: base {got}, expected {want}"
        );
    }
    let plain = RopeConfig { dynamic: None, ..cfg };
    assert_eq!(plain.base_for(98304), 1e6);
    let inv = cfg.inv_freq(10);
    assert_eq!(inv.len(), 64);
    assert_eq!(inv[0], 1.0);
    assert!((inv[63] as f64 - 1e6f64.powf(-126.0 / 128.0)).abs() < 1e-9);
}

#[test]
fn silu_mul_and_gelu_match_f64() {
    let mut r = rng(8);
    let v = values(&mut r, 257, 6.0);
    let (g, gv) = tensor(&v, &[257], DType::F32);
    let (u, uv) = random(&mut r, &[257], DType::F32);
    // One row [gate | up] and its reverse [up | gate]: two rows of 2 x 257.
    let gate_up = concat(&[&g, &u, &u, &g], 0).unwrap().reshape(&[2, 514]).unwrap();
    let y = silu_mul(&gate_up).unwrap();
    assert_eq!(y.shape(), [2, 257]);
    let y = y.to_f64_vec().unwrap();
    let silu_times = |g: &[f64], u: &[f64]| -> Vec<f64> {
        g.iter().zip(u).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect()
    };
    let want = [silu_times(&gv, &uv), silu_times(&uv, &gv)].concat();
    assert_close("silu_mul", &y, &want, 1e-6, 1e-5);
    let y = gelu(&g).unwrap().to_f64_vec().unwrap();
    let want: Vec<f64> = gv
        .iter()
        .map(|x| 0.5 * x * (1.0 + libm::erf(x / 2f64.sqrt())))
        .collect();
    assert_close("gelu", &y, &want, 1e-6, 1e-5);
    // Known values of exact GELU.
    let (t, _) = tensor(&[1.0, -1.0, 0.0], &[3], DType::F32);
    assert_close(
        "gelu(±1)",
        &gelu(&t).unwrap().to_f64_vec().unwrap(),
        &[0.8413447460685429, -0.15865525393145707, 0.0],
        1e-6,
        0.0,
    );
    assert!(silu_mul(&Tensor::from_vec(vec![0f32; 3], &[3]).unwrap()).is_err());
}

#[test]
fn softmax_matches_f64_and_handles_masked_rows() {
    let mut r = rng(9);
    let v = values(&mut r, 3 * 101, 20.0);
    let (x, xv) = tensor(&v, &[3, 101], DType::F32);
    let y = softmax(&x).unwrap().to_f64_vec().unwrap();
    let want: Vec<f64> = xv.chunks(101).flat_map(softmax_ref).collect();
    assert_close("softmax", &y, &want, 1e-7, 1e-5);
    let masked = Tensor::from_vec(vec![f32::NEG_INFINITY; 4], &[1, 4]).unwrap();
    assert_eq!(softmax(&masked).unwrap().to_f32_vec().unwrap(), vec![0.0; 4]);
}

#[test]
fn attention_matches_f64_for_gqa_ratios_and_masks() {
    let mut r = rng(10);
    // (batch, q tokens, k tokens, q heads, kv heads, head dim, causal offset)
    let cases: &[(usize, usize, usize, usize, usize, usize, Option<usize>)] = &[
        (1, 1, 1, 1, 1, 1, None),
        (2, 7, 7, 3, 3, 5, None),
        (1, 9, 9, 8, 2, 16, Some(0)),
        (2, 3, 11, 8, 1, 8, Some(8)),
        (1, 1, 6, 16, 2, 4, Some(5)),
    ];
    for &(b, tq, tk, hq, hkv, d, offset) in cases {
        let (q, qv) = random(&mut r, &[b, tq, hq, d], DType::F32);
        let (k, kv) = random(&mut r, &[b, tk, hkv, d], DType::F32);
        let (v, vv) = random(&mut r, &[b, tk, hkv, d], DType::F32);
        let mask = offset.map_or(AttentionMask::Bidirectional, |o| AttentionMask::Causal {
            query_offset: o,
        });
        let scale = 1.0 / (d as f64).sqrt();
        let y = attention(&q, &k, &v, mask, scale as f32)
            .unwrap()
            .to_f64_vec()
            .unwrap();
        let want = attention_ref(&qv, &kv, &vv, b, tq, tk, hq, hkv, d, offset, scale);
        assert_close(
            &format!("attention {b}x{tq}x{tk} heads {hq}/{hkv} {mask:?}"),
            &y,
            &want,
            1e-5,
            1e-5,
        );
    }
    let q = Tensor::zeros(&[1, 2, 6, 4], DType::F32, nvlm_tensor::Device::Cpu).unwrap();
    let k = Tensor::zeros(&[1, 2, 4, 4], DType::F32, nvlm_tensor::Device::Cpu).unwrap();
    assert!(
        attention(&q, &k, &k, AttentionMask::Bidirectional, 1.0).is_err(),
        "4 kv heads do not divide 6"
    );
    let k = Tensor::zeros(&[1, 2, 3, 4], DType::F32, nvlm_tensor::Device::Cpu).unwrap();
    assert!(
        attention(&q, &k, &k, AttentionMask::Causal { query_offset: 1 }, 1.0).is_err(),
        "not enough keys"
    );
}

#[test]
fn paged_cache_writes_through_the_table_and_attends_in_position_order() {
    let mut r = rng(11);
    let (block_size, pool, len, hq, hkv, d) = (4, 9, 13, 6, 2, 8);
    // Blocks out of order and not from the start of the pool; the last block is partly used.
    let blocks = [5usize, 0, 8, 3];
    let table = BlockTable::new(&blocks, block_size, nvlm_tensor::Device::Cpu).unwrap();
    let (k, kv) = random(&mut r, &[len, hkv, d], DType::F32);
    let (v, vv) = random(&mut r, &[len, hkv, d], DType::F32);
    let zeros = || Tensor::zeros(&[pool * block_size, hkv, d], DType::F32, nvlm_tensor::Device::Cpu).unwrap();
    let (mut kc, mut vc) = (zeros(), zeros());
    // Appends of 6, 1 and 6 positions, as a prefill, a decode step and a chunk would.
    for (start, n) in [(0, 6), (6, 1), (7, 6)] {
        paged_write(&mut kc, &k.narrow0(start, n).unwrap(), &table, start).unwrap();
        paged_write(&mut vc, &v.narrow0(start, n).unwrap(), &table, start).unwrap();
    }
    // Position p sits at slot blocks[p / 4] * 4 + p % 4; every other slot is still zero.
    let cache = kc.to_f64_vec().unwrap();
    let row = hkv * d;
    for slot in 0..pool * block_size {
        let position = (0..len).find(|p| blocks[p / block_size] * block_size + p % block_size == slot);
        let want = position.map_or(vec![0.0; row], |p| kv[p * row..(p + 1) * row].to_vec());
        assert_eq!(cache[slot * row..(slot + 1) * row], want[..], "slot {slot}");
    }
    for (t, offset) in [(1, len - 1), (5, len - 5), (len, 0)] {
        let (q, qv) = random(&mut r, &[t, hq, d], DType::F32);
        let scale = 1.0 / (d as f64).sqrt();
        let got = paged_attention(&q, &kc, &vc, &table, offset, scale as f32).unwrap();
        let want = attention_ref(&qv, &kv, &vv, 1, t, len, hq, hkv, d, Some(offset), scale);
        assert_close(
            &format!("paged attention {t} queries at {offset}"),
            &got.to_f64_vec().unwrap(),
            &want,
            1e-5,
            1e-5,
        );
    }
    // A step of rows from two sequences (a second one in free blocks 7 and 1), each attending its own positions.
    let other = BlockTable::new(&[7, 1], block_size, nvlm_tensor::Device::Cpu).unwrap();
    let (k2, kv2) = random(&mut r, &[6, hkv, d], DType::F32);
    let (v2, vv2) = random(&mut r, &[6, hkv, d], DType::F32);
    paged_write(&mut kc, &k2, &other, 0).unwrap();
    paged_write(&mut vc, &v2, &other, 0).unwrap();
    let rows = PagedRows::new(
        &[(&table, 12, 1), (&other, 5, 1), (&table, 4, 2)],
        nvlm_tensor::Device::Cpu,
    )
    .unwrap();
    let (q, qv) = random(&mut r, &[4, hq, d], DType::F32);
    let scale = 1.0 / (d as f64).sqrt();
    let got = paged_attention_rows(&q, &kc, &vc, &rows, scale as f32)
        .unwrap()
        .to_f64_vec()
        .unwrap();
    let width = hq * d;
    for (i, (p, (keys, values))) in [
        (12, (&kv, &vv)),
        (5, (&kv2, &vv2)),
        (4, (&kv, &vv)),
        (5, (&kv, &vv)),
    ]
    .into_iter()
    .enumerate()
    {
        let seen = (p + 1) * row;
        let want = attention_ref(
            &qv[i * width..(i + 1) * width],
            &keys[..seen],
            &values[..seen],
            1,
            1,
            p + 1,
            hq,
            hkv,
            d,
            Some(p),
            scale,
        );
        assert_close(
            &format!("row {i} at position {p}"),
            &got[i * width..(i + 1) * width],
            &want,
            1e-5,
            1e-5,
        );
    }
    let small = Tensor::zeros(&[8 * block_size, hkv, d], DType::F32, nvlm_tensor::Device::Cpu).unwrap();
    assert!(
        paged_attention_rows(&q, &small, &small, &rows, 1.0).is_err(),
        "block 8 outside an 8-block cache"
    );
    assert!(
        paged_attention_rows(&q.narrow0(0, 3).unwrap(), &kc, &vc, &rows, 1.0).is_err(),
        "3 queries for 4 rows"
    );
    // Errors, not panics: a position without a block, a block outside the pool, a cache shared with a view.
    let one = k.narrow0(0, 1).unwrap();
    assert!(
        paged_write(&mut kc, &one, &table, 16).is_err(),
        "position 16 has no block"
    );
    let outside = BlockTable::new(&[pool], block_size, nvlm_tensor::Device::Cpu).unwrap();
    assert!(paged_write(&mut kc, &one, &outside, 0).is_err(), "block 9 of 9");
    let q = Tensor::zeros(&[1, hq, d], DType::F32, nvlm_tensor::Device::Cpu).unwrap();
    assert!(
        paged_attention(&q, &kc, &vc, &table, 16, 1.0).is_err(),
        "17 keys need 5 blocks"
    );
    let view = kc.clone();
    assert!(
        paged_write(&mut kc, &one, &table, 0).is_err(),
        "the cache is shared with a clone"
    );
    drop(view);
    assert!(paged_write(&mut kc, &one, &table, 0).is_ok());
}

#[test]
fn repetition_penalty_edits_each_distinct_id_once() {
    let row = vec![2.0f32, -2.0, 0.0, 3.0, -1.0];
    let logits = Tensor::from_vec(row.clone(), &[1, 5]).unwrap();
    // 1 twice, 3 once, 9 outside the row.
    let got = repetition_penalty(&logits, &[1, 3, 1, 9], 2.0)
        .unwrap()
        .to_f64_vec()
        .unwrap();
    assert_eq!(got, vec![2.0, -4.0, 0.0, 1.5, -1.0]);
    assert!(repetition_penalty(&logits, &[1], 0.0).is_err(), "penalty 0");
    let two_rows = Tensor::from_vec(vec![0f32; 10], &[2, 5]).unwrap();
    assert!(repetition_penalty(&two_rows, &[1], 1.2).is_err(), "one row only");
}

#[test]
fn gather_rows_splices_table_rows_image_rows_and_zeros() {
    let mut r = rng(12);
    let (table, tv) = random(&mut r, &[10, 3], DType::BF16);
    let (extra, ev) = random(&mut r, &[2, 3], DType::F32);
    use RowSource::{Extra, Table, Zero};
    let sources = [Table(9), Extra(0), Zero, Table(0), Extra(1), Table(9)];
    let y = gather_rows(&sources, &table, Some(&extra), DType::F32).unwrap();
    assert_eq!((y.shape(), y.dtype()), (&[6, 3][..], DType::F32));
    let y = y.to_f64_vec().unwrap();
    for (row, source) in sources.iter().enumerate() {
        let want = match *source {
            Table(i) => tv[i * 3..i * 3 + 3].to_vec(),
            Extra(j) => ev[j * 3..j * 3 + 3].to_vec(),
            Zero => vec![0.0; 3],
        };
        assert_eq!(&y[row * 3..row * 3 + 3], &want[..], "row {row} from {source:?}");
    }
    // Table rows only, in the table's dtype.
    let y = gather_rows(&[Table(4)], &table, None, DType::BF16).unwrap();
    assert_eq!(y.dtype(), DType::BF16);
    assert_eq!(y.to_f64_vec().unwrap(), tv[12..15].to_vec());
    assert!(
        gather_rows(&[Table(10)], &table, None, DType::F32).is_err(),
        "table row past the vocabulary"
    );
    assert!(
        gather_rows(&[Extra(0)], &table, None, DType::F32).is_err(),
        "no extra rows"
    );
    assert!(
        gather_rows(&[Extra(2)], &table, Some(&extra), DType::F32).is_err(),
        "extra row past the end"
    );
    assert!(
        gather_rows(&[Zero], &table, Some(&extra), DType::BF16).is_err(),
        "extra rows in another dtype"
    );
}

#[test]
fn embedding_gathers_rows_and_checks_ids() {
    let mut r = rng(11);
    let (table, tv) = random(&mut r, &[10, 3], DType::BF16);
    let y = embedding(&ids(vec![9, 0, 9, 4]), &table).unwrap();
    assert_eq!((y.shape(), y.dtype()), (&[4, 3][..], DType::BF16));
    let y = y.to_f64_vec().unwrap();
    for (row, id) in [9usize, 0, 9, 4].iter().enumerate() {
        assert_eq!(&y[row * 3..row * 3 + 3], &tv[id * 3..id * 3 + 3]);
    }
    assert!(embedding(&ids(vec![10]), &table).is_err());
    assert!(embedding(&ids(vec![-1]), &table).is_err());
}

#[test]
fn argmax_and_sampling_behave() {
    let logits = Tensor::from_vec(vec![0.0f32, 3.0, 3.0, -1.0, 5.0, 1.0, 2.0, 0.5], &[2, 4]).unwrap();
    assert_eq!(
        argmax(&logits).unwrap().to_vec::<i32>().unwrap(),
        vec![1, 0],
        "first index wins ties"
    );
    assert_eq!(
        argmax_with_value(&logits, 1000).unwrap().to_vec::<f32>().unwrap(),
        vec![3.0, 1001.0, 5.0, 1000.0],
        "(largest value, offset id) per row"
    );
    assert!(
        argmax_with_value(&logits, 1 << 24).is_err(),
        "ids past 2^24 are not exact in f32"
    );
    let greedy = SamplingParams::default();
    assert_eq!(
        sample(&logits, &greedy, 0).unwrap().to_vec::<i32>().unwrap(),
        vec![1, 0]
    );
    let top1 = SamplingParams {
        temperature: 1.0,
        top_k: 1,
        top_p: 1.0,
        seed: 7,
    };
    assert_eq!(
        sample(&logits, &top1, 3).unwrap().to_vec::<i32>().unwrap(),
        vec![1, 0]
    );
    // Row [5, 1, 2, 0.5]: p ≈ [0.93, 0.017, 0.046, 0.010]; top_p = 0.5 keeps the first token only.
    let nucleus = SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 0.5,
        seed: 7,
    };
    for step in 0..20 {
        assert_eq!(
            sample(&logits, &nucleus, step).unwrap().to_vec::<i32>().unwrap()[1],
            0
        );
    }
    // Frequencies follow softmax(logits / T) within sampling noise; the same seed gives the same draws.
    let row = [1.0f32, 0.0, 2.0, -1.0];
    let t = Tensor::from_vec(row.to_vec(), &[1, 4]).unwrap();
    let params = SamplingParams {
        temperature: 2.0,
        top_k: 0,
        top_p: 1.0,
        seed: 42,
    };
    let n = 20_000;
    let mut counts = [0usize; 4];
    let mut first_run = Vec::new();
    for step in 0..n {
        let id = sample(&t, &params, step).unwrap().to_vec::<i32>().unwrap()[0] as usize;
        counts[id] += 1;
        if step < 50 {
            first_run.push(id);
        }
    }
    let probs = softmax_ref(&row.iter().map(|&v| v as f64 / 2.0).collect::<Vec<_>>());
    for i in 0..4 {
        let freq = counts[i] as f64 / n as f64;
        let sigma = (probs[i] * (1.0 - probs[i]) / n as f64).sqrt();
        assert!(
            (freq - probs[i]).abs() < 5.0 * sigma,
            "token {i}: frequency {freq}, probability {}",
            probs[i]
        );
    }
    let again: Vec<usize> = (0..50)
        .map(|s| sample(&t, &params, s).unwrap().to_vec::<i32>().unwrap()[0] as usize)
        .collect();
    assert_eq!(first_run, again);
    // top-k = 2 never draws outside the two best.
    let k2 = SamplingParams { top_k: 2, ..params };
    for step in 0..200 {
        let id = sample(&t, &k2, step).unwrap().to_vec::<i32>().unwrap()[0];
        assert!(id == 0 || id == 2, "top-k 2 drew {id}");
    }
    assert!(sample(&t, &SamplingParams { top_p: 0.0, ..params }, 0).is_err());
    assert!(sample(
        &t,
        &SamplingParams {
            temperature: -1.0,
            ..params
        },
        0
    )
    .is_err());
}

#[test]
fn uniform_draws_are_in_range_and_spread() {
    let n = 10_000;
    let draws: Vec<f32> = (0..n).map(|i| uniform(3, i, 0)).collect();
    assert!(draws.iter().all(|&u| (0.0..1.0).contains(&u)));
    let mean = draws.iter().map(|&u| u as f64).sum::<f64>() / n as f64;
    assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    assert_ne!(uniform(1, 0, 0), uniform(1, 0, 1));
}

#[test]
fn elementwise_ops_match_f64() {
    let mut r = rng(12);
    let (a, av) = random(&mut r, &[3, 5], DType::F32);
    let (b, bv) = random(&mut r, &[3, 5], DType::F32);
    let (s, sv) = random(&mut r, &[5], DType::F32);
    let sum: Vec<f64> = av.iter().zip(&bv).map(|(x, y)| x + y).collect();
    let prod: Vec<f64> = av.iter().zip(&bv).map(|(x, y)| x * y).collect();
    let scaled: Vec<f64> = av.iter().map(|x| x * 0.375).collect();
    let channels: Vec<f64> = av
        .iter()
        .zip(&bv)
        .enumerate()
        .map(|(i, (x, y))| y + x * sv[i % 5])
        .collect();
    assert_close(
        "add",
        &add(&a, &b).unwrap().to_f64_vec().unwrap(),
        &sum,
        1e-7,
        1e-6,
    );
    assert_close(
        "mul",
        &mul(&a, &b).unwrap().to_f64_vec().unwrap(),
        &prod,
        1e-7,
        1e-6,
    );
    assert_close(
        "scale",
        &scale(&a, 0.375).unwrap().to_f64_vec().unwrap(),
        &scaled,
        1e-7,
        1e-6,
    );
    assert_close(
        "add_scaled_channels",
        &add_scaled_channels(&b, &a, &s).unwrap().to_f64_vec().unwrap(),
        &channels,
        1e-7,
        1e-6,
    );
    assert!(add(&a, &s).is_err());
    assert!(add_scaled_channels(&b, &a, &b).is_err());
    assert!(add_scaled_channels(&s, &a, &s).is_err());
    let half = cast(&a, DType::BF16).unwrap();
    assert_eq!(half.dtype(), DType::BF16);
    let rounded: Vec<f64> = av.iter().map(|&x| round_bf16(x)).collect();
    assert_eq!(half.to_f64_vec().unwrap(), rounded);
}

#[test]
fn concat_split_transpose_move_data_exactly() {
    let a = Tensor::from_vec((0..6).map(|i| i as f32).collect(), &[2, 3]).unwrap();
    let b = Tensor::from_vec((6..10).map(|i| i as f32).collect(), &[2, 2]).unwrap();
    let c = concat(&[&a, &b], 1).unwrap();
    assert_eq!(c.shape(), &[2, 5]);
    assert_eq!(
        c.to_f32_vec().unwrap(),
        vec![0., 1., 2., 6., 7., 3., 4., 5., 8., 9.]
    );
    let parts = split(&c, 1, &[3, 2]).unwrap();
    assert_eq!(parts[0].to_f32_vec().unwrap(), a.to_f32_vec().unwrap());
    assert_eq!(parts[1].to_f32_vec().unwrap(), b.to_f32_vec().unwrap());
    let rows = concat(&[&a, &a], 0).unwrap();
    assert_eq!(rows.shape(), &[4, 3]);
    assert!(concat(&[&a, &b], 0).is_err());
    assert!(split(&c, 1, &[3, 3]).is_err());
    let t =
        transpose_last2(&Tensor::from_vec((0..12).map(|i| i as f32).collect(), &[2, 2, 3]).unwrap()).unwrap();
    assert_eq!(t.shape(), &[2, 3, 2]);
    assert_eq!(
        t.to_f32_vec().unwrap(),
        vec![0., 3., 1., 4., 2., 5., 6., 9., 7., 10., 8., 11.]
    );
}

#[test]
fn patch_embed_equals_a_strided_convolution() {
    let mut r = rng(13);
    let (t, c, h, w, p, d) = (2, 3, 6, 4, 2, 5);
    let (px, pv) = random(&mut r, &[t, c, h, w], DType::F32);
    let (wt, wv) = random(&mut r, &[d, c, p, p], DType::F32);
    let (b, bv) = random(&mut r, &[d], DType::F32);
    let y = patch_embed(&px, &wt, &b).unwrap();
    let (gh, gw) = (h / p, w / p);
    assert_eq!(y.shape(), &[t, gh * gw, d]);
    let mut want = Vec::new();
    for ti in 0..t {
        for py in 0..gh {
            for pxi in 0..gw {
                for o in 0..d {
                    let mut acc = bv[o];
                    for ch in 0..c {
                        for dy in 0..p {
                            for dx in 0..p {
                                acc += pv[((ti * c + ch) * h + py * p + dy) * w + pxi * p + dx]
                                    * wv[((o * c + ch) * p + dy) * p + dx];
                            }
                        }
                    }
                    want.push(acc);
                }
            }
        }
    }
    assert_close(
        "patch_embed",
        &y.to_f64_vec().unwrap(),
        &want,
        f32_tol(c * p * p),
        1e-6,
    );
    assert!(
        unfold_patches(&px, 4).is_err(),
        "6x4 is not a whole number of 4px patches"
    );
}

#[test]
fn wrong_dtypes_are_errors_not_panics() {
    let f = Tensor::from_vec(vec![0.5f32; 8], &[2, 4]).unwrap();
    let b = f.to_dtype(DType::BF16).unwrap();
    let i = Tensor::from_vec(vec![1i32; 8], &[2, 4]).unwrap();
    let w = Tensor::from_vec(vec![1f32; 4], &[4]).unwrap();
    let is_dtype_error = |r: Result<Tensor>| {
        matches!(
            r,
            Err(KernelError::Tensor(nvlm_tensor::TensorError::DType { .. }))
        )
    };
    assert!(is_dtype_error(rms_norm(&i, &w, 1e-6)));
    assert!(is_dtype_error(softmax(&i)));
    assert!(is_dtype_error(gelu(&i)));
    assert!(is_dtype_error(add(&f, &b)));
    assert!(is_dtype_error(silu_mul(&i)));
    assert!(is_dtype_error(argmax(&i)));
    assert!(
        is_dtype_error(embedding(&f.reshape(&[8]).unwrap(), &f)),
        "float ids"
    );
    assert!(is_dtype_error(concat(&[&f, &b], 0)));
    let q = f.reshape(&[1, 2, 1, 4]).unwrap();
    assert!(is_dtype_error(attention(
        &q,
        &b.reshape(&[1, 2, 1, 4]).unwrap(),
        &q,
        AttentionMask::Bidirectional,
        1.0
    )));
    let x = f.reshape(&[2, 1, 4]).unwrap();
    let float_positions = Tensor::from_vec(vec![0f32, 1.0], &[2]).unwrap();
    assert!(is_dtype_error(rotary_embedding(
        &x,
        &float_positions,
        &[1.0, 0.5]
    )));
    assert!(is_dtype_error(matmul(&f, &i, None)));
}

#[test]
fn pixel_shuffle_follows_the_v2_formula() {
    // x[t, r, c, ch] = 1000 t + 100 r + 10 c + ch on a 4x4 grid of 2 channels.
    let (t, s, c) = (2, 4, 2);
    let values: Vec<f32> = (0..t * s * s * c)
        .map(|n| {
            let (ti, r, col, ch) = (n / (s * s * c), n / (s * c) % s, n / c % s, n % c);
            (1000 * ti + 100 * r + 10 * col + ch) as f32
        })
        .collect();
    let y = pixel_shuffle(&Tensor::from_vec(values, &[t, s, s, c]).unwrap()).unwrap();
    assert_eq!(y.shape(), &[2, 4, 8]);
    let y = y.to_f32_vec().unwrap();
    // Token (i=1, j=0) of tile 1: block rows 2,3 and columns 0,1.
    let token = &y[(4 + 2) * 8..(4 + 3) * 8];
    assert_eq!(token, &[1200., 1201., 1210., 1211., 1300., 1301., 1310., 1311.]);
    assert!(pixel_shuffle(&Tensor::from_vec(vec![0f32; 18], &[1, 3, 3, 2]).unwrap()).is_err());
}
