// Where attention finds key/value position `key` of batch entry `bi`: contiguous k/v[b, tk, hkv, d], one
// sequence's paged cache, or one row per sequence over the paged cache. Prepended (after common.cuh) to the attention
// kernels' programs.

// Keys and values stored in order: position `key` of batch `bi` is row bi * tk + key of k/v [b, tk, hkv, d].
struct ContiguousKeys {
    int tk;
    __device__ size_t row(int bi, int key) const { return (size_t)bi * tk + key; }
    // Keys query i of batch bi sees: all, or (causal) those up to its position offset + i.
    __device__ int visible(int, int i, int causal, int offset) const { return causal ? min(offset + i + 1, tk) : tk; }
};

// Keys and values of one sequence in a paged cache [slots, hkv, d]: position `key` is at slot
// table[key / block_size] * block_size + key % block_size.
struct PagedKeys {
    const int* table;
    int block_size;
    __device__ size_t row(int, int key) const {
        return (size_t)table[key / block_size] * block_size + key % block_size;
    }
    __device__ int visible(int, int i, int, int offset) const { return offset + i + 1; }
};

// One query row per "batch" entry bi, each of its own sequence: row bi is at position positions[bi] and its
// sequence's block ids start at blocks[starts[bi]] (a decode step of many sequences in one launch).
struct PagedRowKeys {
    const int* blocks;
    const int* starts;
    const int* positions;
    int block_size;
    __device__ size_t row(int bi, int key) const {
        return (size_t)blocks[starts[bi] + key / block_size] * block_size + key % block_size;
    }
    __device__ int visible(int bi, int, int, int) const { return positions[bi] + 1; }
};
