//! The NCCL communicator. Without a GPU or NCCL: a clear error, never a panic. On a GPU (the GPU bundle, which sets
//! `NVLM_REQUIRE_GPU=1`): a group of one on cuda:0 — all-reduce, all-gather and broadcast return their input exactly,
//! in f32 and bf16, and the barrier completes (a single GPU cannot host two NCCL ranks of one process usefully).

use nvlm_dist::{nccl_available, Comm, NcclComm};
use nvlm_tensor::{cuda_available, CudaDevice, DType, Device, Tensor};

fn required() -> bool {
    std::env::var("NVLM_REQUIRE_GPU").as_deref() == Ok("1")
}

#[test]
fn missing_nccl_or_gpu_is_a_clear_error() {
    if nccl_available() {
        println!("skipped: NCCL is present on this machine");
        return;
    }
    let err = NcclComm::unique_id().unwrap_err().to_string();
    assert!(err.contains("libnccl"), "{err}");
}

#[test]
fn a_group_of_one_returns_its_input() {
    if !(cuda_available() && nccl_available()) {
        assert!(
            !required(),
            "NVLM_REQUIRE_GPU=1 but CUDA or NCCL is missing (nccl: {})",
            nccl_available()
        );
        println!("skipped: needs a CUDA device and libnccl.so.2");
        return;
    }
    let device = CudaDevice::get(0).unwrap();
    let comm = NcclComm::single(device).unwrap();
    assert_eq!((comm.rank(), comm.size()), (0, 1));
    let values: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
    for dtype in [DType::F32, DType::BF16] {
        let host = Tensor::from_vec(values.clone(), &[10, 100])
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let gpu = host.to_device(Device::Cuda(0)).unwrap();
        let want = host.to_f32_vec().unwrap();
        for (name, got) in [
            ("all_reduce_sum", comm.all_reduce_sum(&gpu).unwrap()),
            ("all_gather", comm.all_gather(&gpu).unwrap()),
            ("broadcast", comm.broadcast(&gpu, 0).unwrap()),
        ] {
            assert_eq!(got.shape(), [10, 100], "{name} {dtype:?}");
            assert_eq!(got.to_f32_vec().unwrap(), want, "{name} {dtype:?}");
            println!("NCCL-CHECK {name} {dtype:?}: exact");
        }
    }
    comm.barrier().unwrap();
}
