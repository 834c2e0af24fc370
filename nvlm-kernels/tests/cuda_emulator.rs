//! The CUDA emulator itself (`nvlm-testkit/cuda-emu`, run by `cargo xtask cuda-emu`): it must give CUDA's answers
//! for what our kernels rely on (warp shuffles, block barriers, threads that return early) and must stop the
//! mistakes a GPU would punish (a barrier some threads never reach, a write past the end of a buffer) instead of
//! passing them, or, for a missing barrier, answer differently when warps run in the other order
//! (`NVLM_CUDA_EMU_ORDER=reverse`, which `cargo xtask cuda-emu` also runs the op checks under). Skipped on anything but
//! the emulator.

use std::sync::Arc;

use cudarc::driver::{CudaFunction, DriverError, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;
use nvlm_kernels::cuda::{nvrtc, sources::COMMON_HEADER};
use nvlm_tensor::{cuda_available, CudaDevice};

const SOURCE: &str = r#"
extern "C" __global__ void lanes(float* out) {
    const int t = threadIdx.x, lane = t & 31;
    out[4 * t + 0] = block_sum((float)t);
    out[4 * t + 1] = __shfl_xor_sync(0xffffffffu, (float)lane, 5);
    out[4 * t + 2] = __shfl_sync(0xffffffffu, (float)(t * 10), 31);
    out[4 * t + 3] = __shfl_down_sync(0xffffffffu, (float)lane, 3);
}
extern "C" __global__ void early_return(float* out) {
    if (threadIdx.x >= 40) return;  // returned threads no longer count at __syncthreads
    __shared__ float s[64];
    s[threadIdx.x] = threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = s[39 - threadIdx.x];
}
extern "C" __global__ void stuck(float* out) {
    if (threadIdx.x < 16) __syncthreads();
    else out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}
extern "C" __global__ void racy(float* out) {
    __shared__ float s[32];
    if (threadIdx.x < 32) s[threadIdx.x] = 1.0f + threadIdx.x;
    // A __syncthreads() belongs here: warp 1 reads what warp 0 wrote.
    if (threadIdx.x >= 32) out[threadIdx.x - 32] = s[threadIdx.x - 32];
}
extern "C" __global__ void past_the_end(float* out, int n) {
    for (int i = threadIdx.x; i <= n + 4096; i += blockDim.x) out[i] = 1.0f;
}
// One warp: A[16][16] and B[16][8] (small integers, exact in bf16) into fragments, from global memory by the PTX
// layouts and from shared memory by ldmatrix (B stored as its transpose, n-major, and read .trans from a row-major
// copy), then C = A B by the mma model: out[0..128] from the global fragments, out[128..256] from ldmatrix ones.
extern "C" __global__ void mma_product(float* out) {
    const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
    __shared__ unsigned short a_s[16 * 16], b_rows[16 * 8], b_cols[8 * 16];
    auto a_at = [](int i, int k) { return (float)((i * 3 + k) % 7 - 3); };
    auto b_at = [](int k, int n) { return (float)((k * 5 + n * 3) % 5 - 2); };
    auto bits = [](float x) { return __bfloat16_as_ushort(__float2bfloat16_rn(x)); };
    auto pair = [&](float lo, float hi) { return (unsigned)bits(lo) | ((unsigned)bits(hi) << 16); };
    for (int i = lane; i < 256; i += 32) a_s[i] = bits(a_at(i / 16, i % 16));
    for (int i = lane; i < 128; i += 32) {
        b_rows[i] = bits(b_at(i / 8, i % 8));   // [k][n]
        b_cols[i] = bits(b_at(i % 16, i / 16));  // [n][k]
    }
    __syncwarp();
    const unsigned a[4] = {pair(a_at(g, 2 * t), a_at(g, 2 * t + 1)), pair(a_at(g + 8, 2 * t), a_at(g + 8, 2 * t + 1)),
                           pair(a_at(g, 2 * t + 8), a_at(g, 2 * t + 9)),
                           pair(a_at(g + 8, 2 * t + 8), a_at(g + 8, 2 * t + 9))};
    const unsigned b[2] = {pair(b_at(2 * t, g), b_at(2 * t + 1, g)), pair(b_at(2 * t + 8, g), b_at(2 * t + 9, g))};
    float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    __emu_mma_m16n8k16_bf16(c, a, b);
    unsigned la[4], lb[4], lt[4];
    __emu_ldmatrix_x4(la, a_s + ((lane & 7) + ((lane >> 3) & 1) * 8) * 16 + (lane >> 4) * 8, false);
    __emu_ldmatrix_x4(lb, b_cols + (lane & 7) * 16 + (lane >> 3) * 8, false);  // n rows: k 0-7, 8-15, (again)
    __emu_ldmatrix_x4(lt, b_rows + (lane & 15) * 8, true);                     // k rows 0-15, transposed
    const unsigned from_cols[2] = {lb[0], lb[1]};
    if (lt[0] != lb[0] || lt[1] != lb[1]) c[0] = -1000.0f;  // .trans of B[k][n] must equal B^T read straight
    float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    __emu_mma_m16n8k16_bf16(d, la, from_cols);
    for (int e = 0; e < 4; ++e) {
        const int row = g + 8 * (e / 2), col = 2 * t + e % 2;
        out[row * 8 + col] = c[e];
        out[128 + row * 8 + col] = d[e];
    }
}
// One warpgroup: A [64][16] and B as [64 n][16 k], both K-major in 8 x 8 core matrices (lbo 128, sbo 256 bytes),
// one wgmma (D = A B^T over k), D by the documented accumulator layout into out[0..4096]; out[4096 + thread] is what
// the thread's first accumulator held before its wait (the product must not have landed).
extern "C" __global__ void wgmma_product(float* out) {
    __shared__ __align__(128) __nv_bfloat16 a[64 * 16], b[64 * 16];
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
    auto at = [](int m, int k) { return ((m / 8) * 2 + k / 8) * 64 + (m % 8) * 8 + k % 8; };
    for (int i = tid; i < 64 * 16; i += 128) {
        const int m = i / 16, k = i % 16;
        a[at(m, k)] = __float2bfloat16_rn((float)((m * 3 + k) % 7 - 3));
        b[at(m, k)] = __float2bfloat16_rn((float)((m * 5 + k * 3) % 5 - 2));
    }
    __syncthreads();
    float d[32];
    for (int i = 0; i < 32; ++i) d[i] = 0.0f;
    const auto operand = [](const __nv_bfloat16* m) {
        return __EmuSmemOperand{reinterpret_cast<const unsigned char*>(m), 128, 256, EMU_K_MAJOR_INTERLEAVE};
    };
    __emu_wgmma_ss(d, operand(a), operand(b), 64);
    __emu_wgmma_commit();
    const float before = d[0];
    __emu_wgmma_wait(0);
    for (int j = 0; j < 8; ++j)
        for (int e = 0; e < 4; ++e) out[(16 * warp + g + 8 * (e / 2)) * 64 + 8 * j + 2 * t + e % 2] = d[4 * j + e];
    out[4096 + tid] = before;
}
// One warpgroup, the 128-byte swizzled layouts TMA writes: A [64][16] K-major at channels 16..31 of 128-byte rows
// (descriptor start 32 bytes in), B [16 k][128 n] M/N-major in two 64-wide panels (lbo 2048, sbo 1024), each
// element stored where the documented swizzle puts it (16-byte chunk c of row r at chunk c ^ (r % 8)). D = A B by
// the shared-memory form into out[0..8192], and by the register form (A as mma.m16n8k16 fragments) into
// out[8192..16384].
extern "C" __global__ void wgmma_swizzled(float* out) {
    unsigned char* smem = __emu_dynamic_smem();
    unsigned char* a = smem;          // 64 rows x 128 bytes
    unsigned char* b = smem + 8192;   // 2 panels x 16 rows x 128 bytes
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
    auto a_at = [](int m, int k) { return (float)((m * 3 + k) % 7 - 3); };
    auto b_at = [](int k, int n) { return (float)((k * 5 + n * 3) % 5 - 2); };
    auto swizzled = [](int row, int byte) { return row * 128 + (((byte / 16) ^ (row % 8)) * 16) + byte % 16; };
    auto put = [](unsigned char* at, float x) {
        const __nv_bfloat16 v = __float2bfloat16_rn(x);
        std::memcpy(at, &v, 2);
    };
    for (int i = tid; i < 64 * 16; i += 128) put(a + swizzled(i / 16, 32 + 2 * (i % 16)), a_at(i / 16, i % 16));
    for (int i = tid; i < 16 * 128; i += 128) {
        const int k = i / 128, n = i % 128;
        put(b + (n / 64) * 2048 + swizzled(k, 2 * (n % 64)), b_at(k, n));
    }
    __syncthreads();
    const __EmuSmemOperand a_op{a + 32, 16, 1024, EMU_K_MAJOR_SW128}, b_op{b, 2048, 1024, EMU_MN_MAJOR_SW128};
    float d[64], e[64];
    for (int i = 0; i < 64; ++i) d[i] = e[i] = 0.0f;
    __emu_wgmma_ss(d, a_op, b_op, 128);
    auto bits = [](float x) { return __bfloat16_as_ushort(__float2bfloat16_rn(x)); };
    auto pair = [&](int row, int k) { return (unsigned)bits(a_at(row, k)) | ((unsigned)bits(a_at(row, k + 1)) << 16); };
    const int r0 = 16 * warp + g;
    const unsigned frag[4] = {pair(r0, 2 * t), pair(r0 + 8, 2 * t), pair(r0, 2 * t + 8), pair(r0 + 8, 2 * t + 8)};
    __emu_wgmma_rs(e, frag, b_op, 128);
    __emu_wgmma_commit();
    __emu_wgmma_wait(0);
    for (int j = 0; j < 16; ++j)
        for (int x = 0; x < 4; ++x) {
            const int at = (r0 + 8 * (x / 2)) * 128 + 8 * j + 2 * t + x % 2;
            out[at] = d[4 * j + x];
            out[8192 + at] = e[4 * j + x];
        }
}
struct __align__(64) TensorMap {
    unsigned long long opaque[16];
};
// A TMA load of a box of 64 rows x 32 f32 (128-byte rows, 128-byte swizzle) from rows 40.. of a [70][64] f32
// tensor, completing on an mbarrier; every thread waits for phase 0, then reads the box back through the swizzle
// (out[r * 32 + c]). out[2048] is what thread 0 read at the destination before waiting.
extern "C" __global__ void tma_box(float* out, const __grid_constant__ TensorMap map) {
    unsigned char* smem = __emu_dynamic_smem();
    unsigned long long* bar = reinterpret_cast<unsigned long long*>(smem + 8192);
    if (threadIdx.x == 0) __emu_mbarrier_init(bar, 1);
    __syncthreads();
    if (threadIdx.x == 0) {
        __emu_mbarrier_arrive_expect_tx(bar, 64 * 128);
        const int coords[2] = {0, 40};
        __emu_tma_load(smem, &map, coords, 2, bar);
        std::memcpy(&out[2048], smem, 4);
    }
    __emu_mbarrier_wait(bar, 0);
    for (int i = threadIdx.x; i < 64 * 32; i += blockDim.x) {
        const int r = i / 32, byte = 4 * (i % 32);
        std::memcpy(&out[i], smem + r * 128 + (((byte / 16) ^ (r % 8)) * 16) + byte % 16, 4);
    }
}
// Waits for a phase that needs two arrivals when only one thread arrives.
extern "C" __global__ void phase_never_completes(float* out) {
    __shared__ unsigned long long bar;
    if (threadIdx.x == 0) __emu_mbarrier_init(&bar, 2);
    __syncthreads();
    if (threadIdx.x == 0) __emu_mbarrier_arrive(&bar);
    __emu_mbarrier_wait(&bar, 0);
    out[threadIdx.x] = 1.0f;
}
extern "C" __global__ void add_one(float* out) { out[threadIdx.x] += 1.0f; }
// Copies issued and never waited for.
extern "C" __global__ void copies_in_flight(float* out) {
    __shared__ float s[32 * 4];
    __emu_copy_async_16(s + 4 * threadIdx.x, out + 4 * threadIdx.x, true);
    __emu_copy_commit();
}
// A copy lands at its thread's wait, not before.
extern "C" __global__ void copies_land_at_the_wait(float* out) {
    __shared__ float s[32 * 4];
    s[4 * threadIdx.x] = -1.0f;
    __emu_copy_async_16(s + 4 * threadIdx.x, out + 4 * threadIdx.x, true);
    __emu_copy_commit();
    const float before = s[4 * threadIdx.x];
    __emu_copy_wait(0);
    out[4 * threadIdx.x + 1] = before;
    out[4 * threadIdx.x + 2] = s[4 * threadIdx.x];
}
"#;

/// The emulated device, or `None` (printed) on a real GPU or none.
fn emulator() -> Option<Arc<CudaDevice>> {
    if !cuda_available() {
        println!("skipped: no CUDA device (emulated or real)");
        return None;
    }
    let device = CudaDevice::get(0).unwrap();
    let name = device.context().name().unwrap();
    if !name.contains("emulator") {
        println!("skipped: {name} is a real GPU");
        return None;
    }
    Some(device)
}

fn function(device: &Arc<CudaDevice>, name: &str) -> CudaFunction {
    let program = format!("{COMMON_HEADER}\n{SOURCE}");
    let cubin = nvrtc::compile("emulator_check", &program, "sm_90a", false)
        .unwrap()
        .cubin;
    let module = device.context().load_module(Ptx::from_binary(cubin)).unwrap();
    module.load_function(name).unwrap()
}

/// One block of `threads` threads.
fn one_block(threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Launches `name(float* out[, int n])` as one block of `threads` threads over a fresh zeroed `out` of `len` floats;
/// returns whether the launch succeeded, and `out` afterwards.
fn launch_one_block(
    device: &Arc<CudaDevice>,
    name: &str,
    len: usize,
    threads: u32,
    n: Option<i32>,
) -> (Result<(), DriverError>, Vec<f32>) {
    let stream = device.stream();
    let mut out = stream.alloc_zeros::<f32>(len).unwrap();
    let kernel = function(device, name);
    let mut launch = stream.launch_builder(&kernel);
    launch.arg(&mut out);
    if let Some(n) = &n {
        launch.arg(n);
    }
    let config = one_block(threads);
    // SAFETY: every kernel above takes `(float* out[, int n])` and stays inside `len` floats, except `past_the_end`,
    // whose point is to break that, and which runs in a child process.
    let outcome = unsafe { launch.launch(config) }.map(|_| ());
    (outcome, stream.clone_dtoh(&out).unwrap())
}

#[test]
fn shuffles_barriers_and_early_returns_give_cuda_results() {
    let Some(device) = emulator() else { return };
    let threads = 96usize;
    let (outcome, got) = launch_one_block(&device, "lanes", 4 * threads, threads as u32, None);
    outcome.unwrap();
    for t in 0..threads {
        let lane = t % 32;
        let warp_base = t - lane;
        let down = if lane + 3 < 32 { lane + 3 } else { lane };
        let want = [
            (threads * (threads - 1) / 2) as f32,
            (lane ^ 5) as f32,
            ((warp_base + 31) * 10) as f32,
            down as f32,
        ];
        assert_eq!(got[4 * t..4 * t + 4], want, "thread {t}");
    }

    let (outcome, got) = launch_one_block(&device, "early_return", 64, 64, None);
    outcome.unwrap();
    let want: Vec<f32> = (0..64)
        .map(|t| if t < 40 { (39 - t) as f32 } else { 0.0 })
        .collect();
    assert_eq!(got, want);
}

/// Entry (m, n) of the product the `mma_product` and `wgmma_swizzled` kernels compute, in f64: A[m][k] =
/// (3 m + k) mod 7 - 3 times B[k][n] = (5 k + 3 n) mod 5 - 2, over 16 k.
fn product(m: usize, n: usize) -> f64 {
    let a = |k: usize| ((m * 3 + k) % 7) as f64 - 3.0;
    let b = |k: usize| ((k * 5 + n * 3) % 5) as f64 - 2.0;
    (0..16).map(|k| a(k) * b(k)).sum()
}

#[test]
fn the_mma_and_ldmatrix_models_give_the_matrix_product() {
    let Some(device) = emulator() else { return };
    let (outcome, got) = launch_one_block(&device, "mma_product", 256, 32, None);
    outcome.unwrap();
    for row in 0..16 {
        for col in 0..8 {
            let want = product(row, col);
            assert_eq!(got[row * 8 + col] as f64, want, "mma C[{row}][{col}]");
            assert_eq!(
                got[128 + row * 8 + col] as f64,
                want,
                "ldmatrix + mma C[{row}][{col}]"
            );
        }
    }
}

#[test]
fn the_wgmma_model_gives_the_matrix_product_at_the_wait() {
    let Some(device) = emulator() else { return };
    let (outcome, got) = launch_one_block(&device, "wgmma_product", 4096 + 128, 128, None);
    outcome.unwrap();
    let a = |m: usize, k: usize| ((m * 3 + k) % 7) as f64 - 3.0;
    let b = |n: usize, k: usize| ((n * 5 + k * 3) % 5) as f64 - 2.0;
    for m in 0..64 {
        for n in 0..64 {
            let want: f64 = (0..16).map(|k| a(m, k) * b(n, k)).sum();
            assert_eq!(got[m * 64 + n] as f64, want, "D[{m}][{n}]");
        }
    }
    assert!(
        got[4096..].iter().all(|&v| v == 0.0),
        "a product landed before its wait"
    );
}

#[test]
fn the_wgmma_model_reads_swizzled_and_register_operands() {
    let Some(device) = emulator() else { return };
    let stream = device.stream();
    let mut out = stream.alloc_zeros::<f32>(16384).unwrap();
    let kernel = function(&device, "wgmma_swizzled");
    let mut launch = stream.launch_builder(&kernel);
    launch.arg(&mut out);
    let config = LaunchConfig {
        shared_mem_bytes: 8192 + 4096,
        ..one_block(128)
    };
    // SAFETY: the kernel writes 16,384 floats and uses 12 KiB of dynamic shared memory.
    unsafe { launch.launch(config) }.unwrap();
    let got = stream.clone_dtoh(&out).unwrap();
    for m in 0..64 {
        for n in 0..128 {
            let want = product(m, n);
            assert_eq!(got[m * 128 + n] as f64, want, "shared A: D[{m}][{n}]");
            assert_eq!(got[8192 + m * 128 + n] as f64, want, "register A: D[{m}][{n}]");
        }
    }
}

#[test]
fn a_tma_load_lands_swizzled_at_the_barrier_wait_with_zeros_outside() {
    use cudarc::driver::{sys, DevicePtr, DeviceRepr};
    #[repr(C, align(64))]
    struct Map([u64; 16]);
    // SAFETY: 128 plain bytes, the kernel's `TensorMap` parameter.
    unsafe impl DeviceRepr for Map {}
    let Some(device) = emulator() else { return };
    let stream = device.stream();
    let (rows, cols) = (70usize, 64usize);
    let data: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
    let tensor = stream.clone_htod(&data).unwrap();
    let dims = [cols as u64, rows as u64];
    let strides = [(cols * 4) as u64];
    // A rank-2 f32 map over `tensor`, boxes of `boxes` elements, 128-byte swizzle.
    let encode = |boxes: [u32; 2]| {
        let mut map = Map([0; 16]);
        let (address, _read) = tensor.device_ptr(stream);
        let element_strides = [1u32, 1];
        // SAFETY: 128 writable aligned bytes; two-entry arrays for a rank-2 map over live device memory.
        let status = unsafe {
            sys::cuTensorMapEncodeTiled(
                map.0.as_mut_ptr().cast(),
                sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT32,
                2,
                address as *mut std::ffi::c_void,
                dims.as_ptr(),
                strides.as_ptr(),
                boxes.as_ptr(),
                element_strides.as_ptr(),
                sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
                sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
                sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_NONE,
                sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
            )
        };
        status.result().map(|()| map)
    };
    // 192-byte rows: wider than the 128-byte swizzle span.
    assert!(
        encode([48, 64]).is_err(),
        "a box wider than the swizzle span was accepted"
    );
    let map = encode([32, 64]).unwrap();
    let mut out = stream.alloc_zeros::<f32>(2049).unwrap();
    let kernel = function(&device, "tma_box");
    let mut launch = stream.launch_builder(&kernel);
    launch.arg(&mut out);
    launch.arg(&map);
    launch.arg(&tensor);
    let config = LaunchConfig {
        shared_mem_bytes: 8192 + 64,
        ..one_block(64)
    };
    // SAFETY: `tma_box(float* out, TensorMap map)` (the extra tensor argument only keeps it alive), 2,049 floats out.
    unsafe { launch.launch(config) }.unwrap();
    let got = stream.clone_dtoh(&out).unwrap();
    for r in 0..64 {
        for c in 0..32 {
            let row = 40 + r;
            let want = if row < rows { (row * cols + c) as f32 } else { 0.0 };
            assert_eq!(got[r * 32 + c], want, "box row {r} column {c}");
        }
    }
    assert_ne!(got[2048], 40.0 * 64.0, "the load landed before the barrier wait");
}

#[test]
fn a_wait_for_a_phase_that_never_completes_fails_the_launch() {
    let Some(device) = emulator() else { return };
    let (outcome, _) = launch_one_block(&device, "phase_never_completes", 64, 64, None);
    assert!(outcome.is_err(), "a deadlock on an mbarrier ran to the end");
}

#[test]
fn an_async_copy_lands_at_its_wait() {
    let Some(device) = emulator() else { return };
    let stream = device.stream();
    let mut out = stream
        .clone_htod(&(0..128).map(|i| i as f32 + 0.5).collect::<Vec<f32>>())
        .unwrap();
    let kernel = function(&device, "copies_land_at_the_wait");
    let mut launch = stream.launch_builder(&kernel);
    launch.arg(&mut out);
    let config = one_block(32);
    // SAFETY: the kernel reads and writes 4 floats per thread of the 128 given.
    unsafe { launch.launch(config) }.unwrap();
    let got = stream.clone_dtoh(&out).unwrap();
    for t in 0..32 {
        assert_eq!(got[4 * t + 1], -1.0, "thread {t} saw its copy before waiting");
        assert_eq!(
            got[4 * t + 2],
            (4 * t) as f32 + 0.5,
            "thread {t}: the copy did not land"
        );
    }
}

#[test]
fn copies_never_waited_for_stop_the_process() {
    if std::env::var("EMULATOR_CHILD").as_deref() == Ok("copies_in_flight") {
        let _ = launch_one_block(&emulator().unwrap(), "copies_in_flight", 128, 32, None);
        println!("EMULATOR-CHILD survived");
        return;
    }
    if emulator().is_none() {
        return;
    }
    let child = run_child(
        "copies_never_waited_for_stop_the_process",
        "copies_in_flight",
        &[],
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr),
    );
    assert!(!child.status.success(), "the child survived:\n{stdout}\n{stderr}");
    assert!(stderr.contains("cp.async copies not waited for"), "{stderr}");
}

#[test]
fn a_graph_replays_its_work_reading_host_memory_at_each_launch() {
    let Some(device) = emulator() else { return };
    // A stream of its own: the tests run in parallel, and a capture takes over its stream.
    let stream = device.context().new_stream().unwrap();
    let kernel = function(&device, "add_one");
    // SAFETY: written below before any copy reads it.
    let mut host = unsafe { device.context().alloc_pinned::<f32>(32) }.unwrap();
    let mut buffer = stream.alloc_zeros::<f32>(32).unwrap();
    stream
        .begin_capture(cudarc::driver::sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        .unwrap();
    {
        use cudarc::driver::DevicePtrMut;
        let (ptr, _record) = buffer.device_ptr_mut(&stream);
        // SAFETY: 32 pinned f32 into a 32-f32 buffer; the host memory outlives every launch of the graph.
        unsafe {
            cudarc::driver::result::memcpy_htod_async(ptr, host.as_mut_slice().unwrap(), stream.cu_stream())
        }
        .unwrap();
    }
    let mut launch = stream.launch_builder(&kernel);
    launch.arg(&mut buffer);
    let config = one_block(32);
    // SAFETY: the kernel adds one to each of the 32 floats.
    unsafe { launch.launch(config) }.unwrap();
    let graph = stream
        .end_capture(cudarc::driver::sys::CUgraphInstantiate_flags(0))
        .unwrap()
        .unwrap();
    assert_eq!(
        stream.clone_dtoh(&buffer).unwrap(),
        vec![0.0; 32],
        "capture ran the work"
    );
    for value in [5.0f32, 10.0] {
        host.as_mut_slice().unwrap().fill(value);
        graph.launch().unwrap();
        assert_eq!(stream.clone_dtoh(&buffer).unwrap(), vec![value + 1.0; 32]);
    }
}

#[test]
fn what_cuda_forbids_during_capture_fails_it() {
    use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode, CUstreamCaptureStatus};
    if std::env::var("EMULATOR_CHILD").as_deref() != Ok("forbidden") {
        // In a child process: the failed frees below leave errors on the shared context that other tests would see.
        if emulator().is_none() {
            return;
        }
        let child = run_child("what_cuda_forbids_during_capture_fails_it", "forbidden", &[]);
        let stdout = String::from_utf8_lossy(&child.stdout);
        assert!(
            child.status.success() && stdout.contains("FORBIDDEN-OK"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&child.stderr)
        );
        return;
    }
    let device = emulator().unwrap();
    let stream = device.context().new_stream().unwrap();
    let capture = || {
        stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .unwrap()
    };
    let end = || stream.end_capture(CUgraphInstantiate_flags(0));
    let idle = || stream.capture_status().unwrap() == CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE;
    // Waiting for the stream being captured.
    capture();
    assert!(
        stream.synchronize().is_err(),
        "a synchronize during capture succeeded"
    );
    assert!(end().is_err(), "an invalidated capture ended");
    assert!(idle());
    // An allocation made in the capture and still alive at its end (the graph could not be launched twice).
    capture();
    let kept = stream.alloc_zeros::<f32>(16).unwrap();
    assert!(end().is_err(), "a capture leaking memory ended");
    drop(kept);
    // Freeing memory the capture did not allocate. cudarc records the failed free on the context and returns it
    // from its next call, before reaching the driver: a second end_capture ends the capture.
    let outside = stream.alloc_zeros::<f32>(16).unwrap();
    capture();
    drop(outside);
    assert!(end().is_err(), "the failed free went unreported");
    assert!(!idle());
    assert!(end().is_err(), "a capture freeing outside memory ended");
    assert!(idle());
    // And a clean capture still works afterwards.
    capture();
    let inside = stream.alloc_zeros::<f32>(16).unwrap();
    drop(inside);
    assert!(end().unwrap().is_some());
    println!("FORBIDDEN-OK");
}

#[test]
fn a_barrier_some_threads_never_reach_fails_the_launch() {
    let Some(device) = emulator() else { return };
    let (result, _) = launch_one_block(&device, "stuck", 32, 32, None);
    assert!(result.is_err(), "a deadlocked block must fail its launch");
}

/// This test binary run again as a child: `test` alone, with `EMULATOR_CHILD=child` and extra environment.
fn run_child(test: &str, child: &str, env: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture"])
        .env("EMULATOR_CHILD", child)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn a_missing_barrier_answers_differently_in_reverse_order() {
    if std::env::var("EMULATOR_CHILD").as_deref() == Ok("racy") {
        let (outcome, got) = launch_one_block(&emulator().unwrap(), "racy", 32, 64, None);
        outcome.unwrap();
        println!("RACY {got:?}");
        return;
    }
    if emulator().is_none() {
        return;
    }
    let racy = |order: &str| {
        let out = run_child(
            "a_missing_barrier_answers_differently_in_reverse_order",
            "racy",
            &[("NVLM_CUDA_EMU_ORDER", order)],
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        stdout
            .lines()
            .find(|l| l.starts_with("RACY "))
            .unwrap_or_else(|| panic!("no RACY line:\n{stdout}"))
            .to_string()
    };
    let (forward, reverse) = (racy("forward"), racy("reverse"));
    assert!(forward.contains("[1.0, 2.0"), "{forward}");
    assert_ne!(forward, reverse, "the missing barrier went unseen in both orders");
}

#[test]
fn a_write_past_the_end_of_a_buffer_stops_the_process() {
    if std::env::var("EMULATOR_CHILD").as_deref() == Ok("past_the_end") {
        let _ = launch_one_block(&emulator().unwrap(), "past_the_end", 1000, 128, Some(1000));
        println!("EMULATOR-CHILD survived");
        return;
    }
    if emulator().is_none() {
        return;
    }
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "a_write_past_the_end_of_a_buffer_stops_the_process",
            "--exact",
            "--nocapture",
        ])
        .env("EMULATOR_CHILD", "past_the_end")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr),
    );
    assert!(!child.status.success(), "the child survived:\n{stdout}\n{stderr}");
    assert!(!stdout.contains("EMULATOR-CHILD survived"), "{stdout}");
    assert!(
        stderr.contains("kernel past_the_end") && stderr.contains("invalid memory access"),
        "{stderr}"
    );
}
