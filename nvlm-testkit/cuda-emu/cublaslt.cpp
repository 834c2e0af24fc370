// An emulated cuBLASLt (libcublasLt.so) for the CUDA emulator: cublasLtMatmul as the documented column-major
// D = alpha * op(A) * op(B) + beta * C (+ bias per row of D, then ReLU/GELU when the epilogue asks), strided
// batches, bf16 or f32 operands, f32 accumulation. It reads the descriptors the way cuBLASLt documents them, so it
// checks how the engine describes its GEMMs; it says nothing about cuBLASLt's speed or its algorithm choices.

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <type_traits>
#include <vector>

#include "bf16.h"
#include "stream_work.h"

typedef int cublasStatus_t;
enum : cublasStatus_t {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_NOT_SUPPORTED = 15,
};
enum { CUDA_R_32F = 0, CUDA_R_16BF = 14 };
enum {
    DESC_TRANSA = 3,
    DESC_TRANSB = 4,
    DESC_TRANSC = 5,
    DESC_EPILOGUE = 7,
    DESC_BIAS_POINTER = 8,
    DESC_BIAS_BATCH_STRIDE = 10,
    DESC_BIAS_DATA_TYPE = 26,
};
enum { EPILOGUE_DEFAULT = 1, EPILOGUE_RELU = 2, EPILOGUE_BIAS = 4, EPILOGUE_RELU_BIAS = 6, EPILOGUE_GELU = 32,
       EPILOGUE_GELU_BIAS = 36 };
enum { LAYOUT_TYPE = 0, LAYOUT_ORDER = 1, LAYOUT_ROWS = 2, LAYOUT_COLS = 3, LAYOUT_LD = 4, LAYOUT_BATCH_COUNT = 5,
       LAYOUT_STRIDED_BATCH_OFFSET = 6 };

namespace {

struct Desc {
    int compute_type, scale_type;
    int transa = 0, transb = 0, transc = 0;
    int epilogue = EPILOGUE_DEFAULT;
    const void* bias = nullptr;
    long long bias_stride = 0;
    int bias_type = -1;
};
struct Layout {
    int type;
    std::uint64_t rows, cols;
    std::int64_t ld;
    int batch = 1;
    std::int64_t stride = 0;
};

float load(const void* p, int type, std::size_t i) {
    if (type == CUDA_R_32F) return static_cast<const float*>(p)[i];
    return emu_bf16_to_float(static_cast<const std::uint16_t*>(p)[i]);
}
void store(void* p, int type, std::size_t i, float v) {
    if (type == CUDA_R_32F)
        static_cast<float*>(p)[i] = v;
    else
        static_cast<std::uint16_t*>(p)[i] = emu_float_to_bf16(v);
}
std::size_t elem(int type) { return type == CUDA_R_32F ? 4 : 2; }
bool supported(int type) { return type == CUDA_R_32F || type == CUDA_R_16BF; }

template <typename T>
cublasStatus_t set(T& field, const void* buf, std::size_t size) {
    if (!buf || size < sizeof(T)) {
        if constexpr (std::is_integral_v<T>) {
            if (buf && size == 4) {  // a 32-bit value for a 64-bit field
                std::int32_t v;
                memcpy(&v, buf, 4);
                field = (T)v;
                return CUBLAS_STATUS_SUCCESS;
            }
        }
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    memcpy(&field, buf, sizeof(T));
    return CUBLAS_STATUS_SUCCESS;
}

float gelu_tanh(float x) {
    const float c = 0.7978845608028654f;
    return 0.5f * x * (1.0f + std::tanh(c * (x + 0.044715f * x * x * x)));
}

// op(M) of a column-major `rows x cols` matrix as `outer` vectors of `inner` floats: vector o, entry p is op(M)(o, p)
// when `by_rows` (o indexes op(M)'s rows), else op(M)(p, o).
void gather(const void* base, const Layout& l, bool trans, bool by_rows, std::size_t outer, std::size_t inner,
            std::vector<float>& out) {
    out.resize(outer * inner);
    for (std::size_t o = 0; o < outer; ++o)
        for (std::size_t p = 0; p < inner; ++p) {
            // op(M)(r, c): M(r, c) or M(c, r).
            const std::size_t r = by_rows ? o : p, c = by_rows ? p : o;
            const std::size_t i = trans ? c : r, j = trans ? r : c;
            out[o * inner + p] = load(base, l.type, i + j * (std::size_t)l.ld);
        }
}

float dot(const float* a, const float* b, std::size_t n) {
    float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    std::size_t p = 0;
    for (; p + 8 <= n; p += 8)
        for (int u = 0; u < 8; ++u) s[u] += a[p + u] * b[p + u];
    float t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    for (; p < n; ++p) t += a[p] * b[p];
    return t;
}

}  // namespace

namespace {

// D = alpha op(A) op(B) + beta C (+ bias, activation), now.
cublasStatus_t matmul(const Desc& desc, const Layout& la, const Layout& lb, const Layout& lc, const Layout& ld,
                      float alpha, float beta, const void* a, const void* b, const void* c, void* d) {
    const std::size_t m = desc.transa ? la.cols : la.rows, k = desc.transa ? la.rows : la.cols;
    const std::size_t kb = desc.transb ? lb.cols : lb.rows, n = desc.transb ? lb.rows : lb.cols;
    if (kb != k || ld.rows != m || ld.cols != n || lc.rows != m || lc.cols != n) {
        fprintf(stderr,
                "cuda-emu cuBLASLt: shapes disagree: op(A) %zux%zu, op(B) %zux%zu, C %llux%llu, D %llux%llu\n", m, k,
                kb, n, (unsigned long long)lc.rows, (unsigned long long)lc.cols, (unsigned long long)ld.rows,
                (unsigned long long)ld.cols);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    const int batch = ld.batch;
    if (la.batch != batch || lb.batch != batch || lc.batch != batch) return CUBLAS_STATUS_INVALID_VALUE;
    const bool has_bias = desc.epilogue & EPILOGUE_BIAS;
    if (has_bias && !desc.bias) return CUBLAS_STATUS_INVALID_VALUE;
    const int bias_type = desc.bias_type >= 0 ? desc.bias_type : ld.type;
    std::vector<float> rows_a, cols_b;
    for (int bi = 0; bi < batch; ++bi) {
        const char* pa = static_cast<const char*>(a) + (std::size_t)bi * la.stride * elem(la.type);
        const char* pb = static_cast<const char*>(b) + (std::size_t)bi * lb.stride * elem(lb.type);
        const char* pc = static_cast<const char*>(c) + (std::size_t)bi * lc.stride * elem(lc.type);
        char* pd = static_cast<char*>(d) + (std::size_t)bi * ld.stride * elem(ld.type);
        const char* pbias =
            has_bias ? static_cast<const char*>(desc.bias) + (std::size_t)bi * desc.bias_stride * elem(bias_type)
                     : nullptr;
        gather(pa, la, desc.transa, true, m, k, rows_a);
        gather(pb, lb, desc.transb, false, n, k, cols_b);
        for (std::size_t j = 0; j < n; ++j)
            for (std::size_t i = 0; i < m; ++i) {
                float v = alpha * dot(&rows_a[i * k], &cols_b[j * k], k);
                if (beta != 0.0f) v += beta * load(pc, lc.type, i + j * (std::size_t)lc.ld);
                if (has_bias) v += load(pbias, bias_type, i);
                if (desc.epilogue == EPILOGUE_RELU || desc.epilogue == EPILOGUE_RELU_BIAS) v = v > 0 ? v : 0;
                if (desc.epilogue == EPILOGUE_GELU || desc.epilogue == EPILOGUE_GELU_BIAS) v = gelu_tanh(v);
                store(pd, ld.type, i + j * (std::size_t)ld.ld, v);
            }
    }
    return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

extern "C" {

cublasStatus_t cublasLtCreate(void** handle) {
    *handle = new int(0);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(void* handle) {
    delete static_cast<int*>(handle);
    return CUBLAS_STATUS_SUCCESS;
}
std::size_t cublasLtGetVersion() { return 130000; }

cublasStatus_t cublasLtMatmulDescCreate(void** desc, int compute_type, int scale_type) {
    auto* d = new Desc{};
    d->compute_type = compute_type;
    d->scale_type = scale_type;
    *desc = d;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(void* desc) {
    delete static_cast<Desc*>(desc);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(void* desc, int attr, const void* buf, std::size_t size) {
    auto* d = static_cast<Desc*>(desc);
    switch (attr) {
        case DESC_TRANSA: return set(d->transa, buf, size);
        case DESC_TRANSB: return set(d->transb, buf, size);
        case DESC_TRANSC: return set(d->transc, buf, size);
        case DESC_EPILOGUE: return set(d->epilogue, buf, size);
        case DESC_BIAS_POINTER: return set(d->bias, buf, size);
        case DESC_BIAS_BATCH_STRIDE: return set(d->bias_stride, buf, size);
        case DESC_BIAS_DATA_TYPE: return set(d->bias_type, buf, size);
        default:
            fprintf(stderr, "cuda-emu cuBLASLt: matmul descriptor attribute %d is not emulated\n", attr);
            return CUBLAS_STATUS_NOT_SUPPORTED;
    }
}

cublasStatus_t cublasLtMatrixLayoutCreate(void** layout, int type, std::uint64_t rows, std::uint64_t cols,
                                          std::int64_t ld) {
    if (!supported(type)) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (rows > 0 && ld < (std::int64_t)rows) return CUBLAS_STATUS_INVALID_VALUE;  // column-major: ld >= rows
    *layout = new Layout{type, rows, cols, ld};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(void* layout) {
    delete static_cast<Layout*>(layout);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutSetAttribute(void* layout, int attr, const void* buf, std::size_t size) {
    auto* l = static_cast<Layout*>(layout);
    switch (attr) {
        case LAYOUT_BATCH_COUNT: return set(l->batch, buf, size);
        case LAYOUT_STRIDED_BATCH_OFFSET: return set(l->stride, buf, size);
        default:
            fprintf(stderr, "cuda-emu cuBLASLt: matrix layout attribute %d is not emulated\n", attr);
            return CUBLAS_STATUS_NOT_SUPPORTED;
    }
}

cublasStatus_t cublasLtMatmulPreferenceCreate(void** pref) {
    *pref = new int(0);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(void* pref) {
    delete static_cast<int*>(pref);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(void*, int, const void*, std::size_t) {
    return CUBLAS_STATUS_SUCCESS;
}

struct HeuristicResult {
    std::uint64_t algo[8];
    std::size_t workspace_size;
    cublasStatus_t state;
    float waves;
    int reserved[4];
};
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(void*, void*, void*, void*, void*, void*, void*, int requested,
                                              HeuristicResult* results, int* returned) {
    if (requested < 1) return CUBLAS_STATUS_INVALID_VALUE;
    memset(results, 0, sizeof(HeuristicResult));
    *returned = 1;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(void*, void* desc_, const void* alpha_, const void* a, void* a_desc, const void* b,
                              void* b_desc, const void* beta_, const void* c, void* c_desc, void* d, void* d_desc,
                              const void*, void*, std::size_t, void* stream) {
    // The descriptors and the host scalars as they are now (a captured GEMM runs later, after they may be gone).
    const Desc desc = *static_cast<Desc*>(desc_);
    const Layout la = *static_cast<Layout*>(a_desc), lb = *static_cast<Layout*>(b_desc),
                 lc = *static_cast<Layout*>(c_desc), ld = *static_cast<Layout*>(d_desc);
    if (desc.scale_type != CUDA_R_32F || desc.transc) return CUBLAS_STATUS_NOT_SUPPORTED;
    const float alpha = *static_cast<const float*>(alpha_), beta = *static_cast<const float*>(beta_);
    return emu_on_stream(stream, [=] { return matmul(desc, la, lb, lc, ld, alpha, beta, a, b, c, d); });
}

}  // extern "C"
