// FlashAttention-3's structure on Hopper (sm_90a) for prefill over contiguous keys or one sequence's paged cache:
// warp specialisation, TMA loads and warpgroup MMA. The same inputs and outputs as flash_attention.cu, given as TMA
// tensor maps. Needs flash_common.cuh, wgmma.cuh and tma.cuh.
//
// A block is three warpgroups for 128 queries of one (batch, head):
// - warpgroup 0 produces: one thread loads the block's Q once and then each 128-key tile of K and of V by TMA into
//   a ring of TMA_STAGES slots, each load completing on the slot's mbarrier (K and V apart, so S = Q K^T can start
//   before V lands), and waits for the consumers to release a slot before refilling it;
// - warpgroups 1 and 2 consume, 64 queries each: S = Q K^T by wgmma from shared memory, the online softmax in
//   registers, P turned into wgmma's A fragments in registers (never through shared memory), O += P V by wgmma
//   with V read transposed from its slot; then they release the slot. Within a warpgroup the tiles are pipelined
//   as in FlashAttention-3: tile n's S = Q K^T and tile n - 1's P V are queued together, and tile n's softmax runs
//   while P V is still in flight. A consumer computes only the tiles its rows can see (causal) but releases all.
// The producer warpgroup gives up registers (setmaxnreg) for the consumers, which hold S, P and O at once.
// Tiles are what TMA writes with the 128-byte swizzle: per 64 channels a panel of [rows][64] bf16, 128-byte rows,
// which wgmma reads through K_MAJOR_SW128 descriptors (Q, K: contraction over channels) and MN_MAJOR_SW128 ones
// (V: contraction over keys, channels along N).

#define TMA_QUERIES 128
#define TMA_KEYS 128
#define TMA_STAGES 3
#define TMA_THREADS 384
// Registers a thread after setmaxnreg: 128 x 40 + 256 x 232 fits the SM's 64 K.
#define TMA_PRODUCER_REGISTERS 40
#define TMA_CONSUMER_REGISTERS 232

// Byte offsets in the block's dynamic shared memory (1024-byte aligned pieces).
template <int D>
struct TmaLayout {
    static constexpr unsigned PANEL_ROW = 128;                      // one 64-channel row of a panel
    static constexpr unsigned Q_PANEL = TMA_QUERIES * PANEL_ROW;    // [128 queries][64]
    static constexpr unsigned KV_PANEL = TMA_KEYS * PANEL_ROW;      // [128 keys][64]
    static constexpr unsigned TILE = (D / 64) * KV_PANEL;           // one K or V tile
    static constexpr unsigned K_AT = (D / 64) * Q_PANEL;
    static constexpr unsigned V_AT = K_AT + TMA_STAGES * TILE;
    static constexpr unsigned BARRIERS_AT = V_AT + TMA_STAGES * TILE;
    static constexpr unsigned BYTES = BARRIERS_AT + 8 * (1 + 3 * TMA_STAGES);
};

// Where the producer finds a tile's keys (or values) for one 64-channel panel: contiguous k/v [b, tk, hkv, D], one
// box of TMA_KEYS rows, ...
struct ContiguousTiles {
    __device__ void load(unsigned char* panel, const TensorMap* map, unsigned long long* bar, int c0, int kh, int k0,
                         int bi) const {
        tma_load_4d(panel, map, bar, c0, kh, k0, bi);
    }
};

// ... or one sequence's paged cache [slots, hkv, D]: a box of block_size rows per page of the tile, from the page's
// slots. Pages past the table's `pages` load its last page again, whose keys the softmax masks (so the cache's
// slots past the sequence must hold finite values, as a zeroed pool does: 0 x NaN would not vanish).
struct PagedTiles {
    const int* table;
    int block_size, pages;
    __device__ void load(unsigned char* panel, const TensorMap* map, unsigned long long* bar, int c0, int kh, int k0,
                         int) const {
        for (int j = 0; j < TMA_KEYS / block_size; ++j) {
            const int page = min(k0 / block_size + j, pages - 1);
            tma_load_3d(panel + j * block_size * 128, map, bar, c0, kh, table[page] * block_size);
        }
    }
};

// The producer thread: Q, then K and V tile by tile through the ring.
template <int D, typename Tiles>
__device__ __forceinline__ void produce_tiles(unsigned char* smem, unsigned long long* bars, const TensorMap* qmap,
                                              const TensorMap* kmap, const TensorMap* vmap, const Tiles& source,
                                              int bi, int h, int kh, int q0, int tiles) {
    using L = TmaLayout<D>;
    unsigned long long *q_full = bars, *k_full = bars + 1, *v_full = k_full + TMA_STAGES,
                       *empty = v_full + TMA_STAGES;
    mbarrier_arrive_expect_tx(q_full, (D / 64) * L::Q_PANEL);
    for (int p = 0; p < D / 64; ++p) tma_load_4d(smem + p * L::Q_PANEL, qmap, q_full, 64 * p, h, q0, bi);
    for (int n = 0; n < tiles; ++n) {
        const int s = n % TMA_STAGES;
        mbarrier_wait(empty + s, ((n / TMA_STAGES) & 1) ^ 1);  // the consumers are done with the slot's last tile
        unsigned char* k_tile = smem + L::K_AT + s * L::TILE;
        unsigned char* v_tile = smem + L::V_AT + s * L::TILE;
        mbarrier_arrive_expect_tx(k_full + s, L::TILE);
        for (int p = 0; p < D / 64; ++p)
            source.load(k_tile + p * L::KV_PANEL, kmap, k_full + s, 64 * p, kh, n * TMA_KEYS, bi);
        mbarrier_arrive_expect_tx(v_full + s, L::TILE);
        for (int p = 0; p < D / 64; ++p)
            source.load(v_tile + p * L::KV_PANEL, vmap, v_full + s, 64 * p, kh, n * TMA_KEYS, bi);
    }
}

// Queues S[64 queries][TMA_KEYS keys] = Q K^T for consumer warpgroup `cw` from slot tile `k_tile` as one wgmma group
// (not waited for): D / 16 steps of 16 channels, each inside one panel (32 bytes along its 128-byte rows).
template <int D>
__device__ __forceinline__ void issue_scores(float (&s)[TMA_KEYS / 8][4], const unsigned char* smem, int cw,
                                             const unsigned char* k_tile) {
    using L = TmaLayout<D>;
    zero_tiles(s);
    float(&d)[TMA_KEYS / 2] = reinterpret_cast<float(&)[TMA_KEYS / 2]>(s);
    fence_registers<TMA_KEYS / 2>(d);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        const unsigned in_panel = (kk % 4) * 32;  // 16 channels of the panel's 64
        const SmemOperand q{smem + (kk / 4) * L::Q_PANEL + cw * 64 * L::PANEL_ROW + in_panel, 16, 1024, K_MAJOR_SW128};
        const SmemOperand k{k_tile + (kk / 4) * L::KV_PANEL + in_panel, 16, 1024, K_MAJOR_SW128};
        wgmma_bf16_ss<TMA_KEYS>(d, q, k);
    }
    wgmma_commit();
}

// The probabilities of a tile's scores as bf16 A fragments of P V, 16 keys (two n8 tiles of s) a step.
__device__ __forceinline__ void to_fragments(const float (&s)[TMA_KEYS / 8][4], unsigned (&p)[TMA_KEYS / 16][4]) {
#pragma unroll
    for (int kk = 0; kk < TMA_KEYS / 16; ++kk) {
        p[kk][0] = pack_bf16x2(s[2 * kk][0], s[2 * kk][1]);
        p[kk][1] = pack_bf16x2(s[2 * kk][2], s[2 * kk][3]);
        p[kk][2] = pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        p[kk][3] = pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
    }
}

// Queues O[64 queries][D] += P V as one wgmma group (not waited for; p must not change until it is): P from
// registers, V from slot tile `v_tile` read M/N-major (channels along N, panels KV_PANEL apart; 8-key row groups
// 1024 bytes apart).
template <int D>
__device__ __forceinline__ void issue_pv(float (&acc)[D / 8][4], const unsigned (&p)[TMA_KEYS / 16][4],
                                         const unsigned char* v_tile) {
    using L = TmaLayout<D>;
    float(&d)[D / 2] = reinterpret_cast<float(&)[D / 2]>(acc);
    fence_registers<D / 2>(d);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < TMA_KEYS / 16; ++kk)
        wgmma_bf16_rs<D, true>(d, p[kk],
                               SmemOperand{v_tile + kk * 16 * L::PANEL_ROW, L::KV_PANEL, 1024, MN_MAJOR_SW128});
    wgmma_commit();
}

template <int D, typename Tiles>
__device__ void attention_tma(const TensorMap* qmap, const TensorMap* kmap, const TensorMap* vmap,
                              __nv_bfloat16* __restrict__ o, int tq, int tk, int hq, int hkv, int causal, int offset,
                              float scale, Tiles source) {
    using L = TmaLayout<D>;
    unsigned char* smem = dynamic_smem_1024(L::BYTES);
    unsigned long long* bars = reinterpret_cast<unsigned long long*>(smem + L::BARRIERS_AT);
    unsigned long long *q_full = bars, *k_full = bars + 1, *v_full = k_full + TMA_STAGES,
                       *empty = v_full + TMA_STAGES;
    const int q_tiles = (tq + TMA_QUERIES - 1) / TMA_QUERIES;
    const int q0 = (blockIdx.x % q_tiles) * TMA_QUERIES, h = (blockIdx.x / q_tiles) % hq,
              bi = blockIdx.x / (q_tiles * hq), kh = h / (hq / hkv);
    const int last = min(q0 + TMA_QUERIES, tq) - 1;
    const int key_end = causal ? min(offset + last + 1, tk) : tk;
    const int tiles = (key_end + TMA_KEYS - 1) / TMA_KEYS;

    if (threadIdx.x == 0) {
        mbarrier_init(q_full, 1);
        for (int s = 0; s < TMA_STAGES; ++s) {
            mbarrier_init(k_full + s, 1);
            mbarrier_init(v_full + s, 1);
            mbarrier_init(empty + s, TMA_THREADS - 128);  // every consumer thread releases
        }
        mbarrier_init_fence();
    }
    __syncthreads();
    const int wg = threadIdx.x / 128;
    if (wg == 0) {
        registers_decrease<TMA_PRODUCER_REGISTERS>();
        if (threadIdx.x == 0) produce_tiles<D>(smem, bars, qmap, kmap, vmap, source, bi, h, kh, q0, tiles);
        return;
    }
    registers_increase<TMA_CONSUMER_REGISTERS>();

    // A consumer: its 64 queries, each thread rows g and g + 8 of its warp's 16.
    const int cw = wg - 1, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int first = q0 + 64 * cw;
    FlashRows rows = flash_rows(first + warp * 16, g, causal, offset, tk, scale);
    const int own_end = first >= tq ? 0 : causal ? min(offset + min(first + 64, tq), tk) : tk;
    float acc[D / 8][4];
    zero_tiles(acc);

    // Tile n is in slot n % TMA_STAGES, its barriers' phase parity (n / TMA_STAGES) & 1. This warpgroup computes
    // tiles 0 .. live - 1; it releases every tile, each only after waiting for it (a release counts toward the
    // slot's current phase, so none may run ahead of the tile it is for).
    const int live = min(tiles, (own_end + TMA_KEYS - 1) / TMA_KEYS);
    auto slot = [](int n) { return n % TMA_STAGES; };
    auto parity = [](int n) { return (unsigned)(n / TMA_STAGES) & 1u; };
    auto k_tile = [&](int n) { return smem + L::K_AT + slot(n) * L::TILE; };
    auto v_tile = [&](int n) { return smem + L::V_AT + slot(n) * L::TILE; };
    float sc[TMA_KEYS / 8][4], correction[2];
    unsigned p[TMA_KEYS / 16][4];
    mbarrier_wait(q_full, 0);
    if (live > 0) {
        mbarrier_wait(k_full + slot(0), parity(0));
        issue_scores<D>(sc, smem, cw, k_tile(0));
        wgmma_wait<0>();
        fence_registers<TMA_KEYS / 2>(&sc[0][0]);
        online_softmax_tile(sc, 0, t, rows, correction);  // O is still zero: nothing to rescale
        to_fragments(sc, p);
    }
    for (int n = 1; n < live; ++n) {
        mbarrier_wait(k_full + slot(n), parity(n));
        issue_scores<D>(sc, smem, cw, k_tile(n));
        mbarrier_wait(v_full + slot(n - 1), parity(n - 1));
        issue_pv<D>(acc, p, v_tile(n - 1));
        wgmma_wait<1>();  // S of tile n has landed; P V of tile n - 1 may still run
        fence_registers<TMA_KEYS / 2>(&sc[0][0]);
        online_softmax_tile(sc, n * TMA_KEYS, t, rows, correction);
        wgmma_wait<0>();
        fence_registers<D / 2>(&acc[0][0]);
        mbarrier_arrive(empty + slot(n - 1));
        rescale_rows<D>(acc, correction);  // O holds tiles up to n - 1, at the old running max
        to_fragments(sc, p);
    }
    if (live > 0) {
        mbarrier_wait(v_full + slot(live - 1), parity(live - 1));
        issue_pv<D>(acc, p, v_tile(live - 1));
        wgmma_wait<0>();
        fence_registers<D / 2>(&acc[0][0]);
        mbarrier_arrive(empty + slot(live - 1));
    }
    for (int n = live; n < tiles; ++n) {
        mbarrier_wait(v_full + slot(n), parity(n));
        mbarrier_arrive(empty + slot(n));
    }
    store_rows<D>(acc, rows, t, o, bi, tq, hq, h);
}

// Entry points with the CUDA-core kernels' parameters (q, k, v and the table for the launch's bookkeeping; the
// kernel reads them through the maps), then the tensor maps: q as [b, tq, hq, D] (4-D, boxes of 64 channels x 1
// head x 128 queries x 1 batch entry), k and v as [b, tk, hkv, D] (boxes of 64 x 1 x 128 keys x 1) or, paged, as
// the pool [slots, hkv, D] (3-D, boxes of 64 x 1 x block_size slots); all with the 128-byte swizzle.
#define TMA_ENTRY_POINTS(D)                                                                                         \
    extern "C" __global__ void __launch_bounds__(TMA_THREADS, 1) attention_tma_d##D(                                \
        const __nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*, __nv_bfloat16* o, int, int tq, int tk,    \
        int hq, int hkv, int, int causal, int offset, float scale, const __grid_constant__ TensorMap qmap,          \
        const __grid_constant__ TensorMap kmap, const __grid_constant__ TensorMap vmap) {                           \
        attention_tma<D>(&qmap, &kmap, &vmap, o, tq, tk, hq, hkv, causal, offset, scale, ContiguousTiles{});        \
    }                                                                                                               \
    extern "C" __global__ void __launch_bounds__(TMA_THREADS, 1) paged_attention_tma_d##D(                          \
        const __nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*, const int* table, __nv_bfloat16* o, int t, \
        int hq, int hkv, int, int offset, int block_size, float scale, const __grid_constant__ TensorMap qmap,      \
        const __grid_constant__ TensorMap kmap, const __grid_constant__ TensorMap vmap) {                           \
        const PagedTiles pages{table, block_size, (offset + t + block_size - 1) / block_size};                      \
        attention_tma<D>(&qmap, &kmap, &vmap, o, t, offset + t, hq, hkv, 1, offset, scale, pages);                  \
    }
TMA_ENTRY_POINTS(64)
TMA_ENTRY_POINTS(128)
