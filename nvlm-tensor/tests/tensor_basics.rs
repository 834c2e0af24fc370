//! Host tensor behaviour and the no-CUDA guarantees, on any machine.

use nvlm_tensor::half::bf16;
use nvlm_tensor::{cuda_available, DType, Device, MemoryWeights, Tensor, TensorError, Weights};

#[test]
fn views_share_storage_and_check_bounds() {
    let t = Tensor::from_vec((0..24).map(|i| i as f32).collect(), &[4, 3, 2]).unwrap();
    let rows = t.narrow0(1, 2).unwrap();
    assert_eq!(rows.shape(), &[2, 3, 2]);
    assert_eq!(rows.as_slice::<f32>().unwrap()[0], 6.0);
    let third = t.index0(3).unwrap();
    assert_eq!(third.shape(), &[3, 2]);
    assert_eq!(
        third.as_slice::<f32>().unwrap(),
        &[18.0, 19.0, 20.0, 21.0, 22.0, 23.0]
    );
    assert!(matches!(t.narrow0(3, 2), Err(TensorError::Shape { .. })));
    assert!(matches!(t.reshape(&[5, 5]), Err(TensorError::Shape { .. })));
    assert_eq!(t.reshape(&[6, 4]).unwrap().rows(), 6);
}

#[test]
fn construction_checks_sizes_and_dtypes() {
    assert!(Tensor::from_vec(vec![1.0f32; 5], &[2, 3]).is_err());
    let t = Tensor::from_vec(vec![1i32, 2, 3], &[3]).unwrap();
    assert!(matches!(t.as_slice::<f32>(), Err(TensorError::DType { .. })));
    assert!(Tensor::from_bytes(&[0u8; 7], DType::F32, &[2], Device::Cpu).is_err());
    // Unaligned source bytes are fine: they are copied into aligned storage.
    let bytes = [0u8, 0, 0, 128, 63];
    let t = Tensor::from_bytes(&bytes[1..], DType::F32, &[1], Device::Cpu).unwrap();
    assert_eq!(t.as_slice::<f32>().unwrap(), &[1.0]);
}

#[test]
fn dtype_conversions_round_as_expected() {
    let values = vec![1.0f32, -2.5, 3.140625, 1.0 + 1.0 / 256.0, 65504.0, 1e-3];
    let t = Tensor::from_vec(values.clone(), &[2, 3]).unwrap();
    let b = t.to_dtype(DType::BF16).unwrap();
    assert_eq!(b.dtype(), DType::BF16);
    let back = b.to_dtype(DType::F32).unwrap();
    let back = back.as_slice::<f32>().unwrap();
    for (x, y) in values.iter().zip(back) {
        assert_eq!(bf16::from_f32(*x).to_f32(), *y);
    }
    // 1 + 2^-8 is a tie between 1 and 1 + 2^-7 in bf16; nearest-even gives 1.
    assert_eq!(back[3], 1.0);
    let ints = Tensor::from_vec(vec![1.9f32, -1.9, 300.0], &[3])
        .unwrap()
        .to_dtype(DType::I64)
        .unwrap();
    assert_eq!(ints.as_slice::<i64>().unwrap(), &[1, -1, 300]);
    let bytes = Tensor::from_vec(vec![300.0f32, -5.0], &[2])
        .unwrap()
        .to_dtype(DType::U8)
        .unwrap();
    assert_eq!(bytes.as_slice::<u8>().unwrap(), &[255, 0]);
    assert!(t.to_dtype(DType::F8E4M3).is_err());
}

#[test]
fn no_cuda_means_errors_not_panics() {
    if cuda_available() {
        println!("CUDA is available here; the no-driver path is not exercised");
        let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).unwrap();
        let d = t.to_device(Device::cuda(0).unwrap()).unwrap();
        assert_eq!(d.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0]);
        assert!(Device::cuda(10_000).is_err());
        return;
    }
    let err = Device::cuda(0).unwrap_err();
    assert!(matches!(err, TensorError::CudaUnavailable(_)), "{err}");
    assert!(err.to_string().contains("CUDA unavailable"));
    assert!(Device::parse("cuda:1").is_err());
    assert_eq!(Device::parse("cpu").unwrap(), Device::Cpu);
    assert!(Device::parse("tpu").is_err());
    let t = Tensor::from_vec(vec![1.0f32], &[1]).unwrap();
    assert!(t.to_device(Device::Cuda(0)).is_err());
    assert!(Tensor::zeros(&[2], DType::F32, Device::Cuda(0)).is_err());
}

#[test]
fn memory_weights_serve_views() {
    let mut w = MemoryWeights::new();
    w.insert(
        "a.weight",
        &[2, 2],
        &[bf16::ONE, bf16::ZERO, bf16::ZERO, bf16::ONE],
    )
    .unwrap();
    assert!(w.insert("bad", &[3], &[1.0f32]).is_err());
    let v = w.get("a.weight").unwrap();
    assert_eq!(
        (v.dtype, v.shape.clone(), v.numel()),
        (DType::BF16, vec![2, 2], 4)
    );
    let t = Tensor::from_view(&v, Device::Cpu).unwrap();
    assert_eq!(t.to_f32_vec().unwrap(), vec![1.0, 0.0, 0.0, 1.0]);
    assert!(matches!(w.get("b"), Err(TensorError::MissingWeight(_))));
    assert_eq!(w.names(), vec!["a.weight".to_string()]);
}

/// The in-place writes a CUDA graph's fixed buffers need: `copy_from` and `write_from_host` refuse a shared storage,
/// a shape or dtype mismatch; `deep_copy` does not alias. On the CPU, and on a CUDA device when there is one.
#[test]
fn in_place_writes_check_and_deep_copies_do_not_alias() {
    let src = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
    let mut devices = vec![Device::Cpu];
    if cuda_available() {
        devices.push(Device::cuda(0).unwrap());
    }
    for device in devices {
        let src = src.to_device(device).unwrap();
        let mut dst = Tensor::zeros(&[2, 3], DType::F32, device).unwrap();
        let before = dst.deep_copy().unwrap();
        dst.copy_from(&src).unwrap();
        assert_eq!(
            dst.to_vec::<f32>().unwrap(),
            src.to_vec::<f32>().unwrap(),
            "{device}"
        );
        assert_eq!(
            before.to_vec::<f32>().unwrap(),
            vec![0.0; 6],
            "{device}: deep_copy aliased"
        );
        let wrong = Tensor::zeros(&[3, 2], DType::F32, device).unwrap();
        assert!(
            dst.copy_from(&wrong).is_err(),
            "{device}: shape mismatch accepted"
        );
        let alias = dst.clone();
        assert!(
            dst.copy_from(&src).is_err(),
            "{device}: write into a shared storage accepted"
        );
        drop(alias);
        match device {
            Device::Cpu => assert!(
                dst.write_from_host(&[0.0f32; 6]).is_err(),
                "host tensor written as device"
            ),
            Device::Cuda(_) => {
                dst.write_from_host(&[9.0f32, 8.0, 7.0, 6.0, 5.0, 4.0]).unwrap();
                assert_eq!(dst.to_vec::<f32>().unwrap(), vec![9.0, 8.0, 7.0, 6.0, 5.0, 4.0]);
                assert!(
                    dst.write_from_host(&[1i32; 6]).is_err(),
                    "dtype mismatch accepted"
                );
                assert!(
                    dst.write_from_host(&[1.0f32; 5]).is_err(),
                    "length mismatch accepted"
                );
            }
        }
    }
}
