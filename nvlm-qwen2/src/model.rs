//! The Qwen2 decoder (`nvlm-d.md` §8): embeddings, layers of RMSNorm → QKV (bias) → RoPE → GQA attention over the
//! paged KV cache → output projection, RMSNorm → SwiGLU MLP; final norm; untied LM head.

use nvlm_kernels::{self as k, PagedRows};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use nvlm_dist::Comm;
use nvlm_tensor::{load_weight, Device, Tensor, Weights};

use crate::decode_graph::{self, DecodeGraphs};
use crate::kv_cache::{PagedKvCache, SequenceId};
use crate::tensor_parallel::{ShardedLoader, Sharding};
use crate::{Qwen2Config, Result};

/// What every layer of one step shares: the RoPE frequencies and where the rows live in the paged cache (each
/// uploaded once per step), and which rows belong to which sequence.
struct Step<'a> {
    inv_freq: &'a Tensor,
    rows: &'a PagedRows,
    segments: &'a [Segment],
    /// In a step that mixes prompt chunks with other rows: the single-row segments' rows alone, in order.
    single_rows: Option<&'a PagedRows>,
}

/// Consecutive rows of a forward pass that belong to one sequence, at positions `start..start + rows`.
struct Segment {
    seq: SequenceId,
    start: usize,
    rows: usize,
}

/// One decoder layer's tensors as the checkpoint stores them (this rank's slices).
struct LayerWeights {
    input_norm: Tensor,
    q: Tensor,
    q_bias: Tensor,
    k: Tensor,
    k_bias: Tensor,
    v: Tensor,
    v_bias: Tensor,
    o: Tensor,
    post_norm: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

/// One decoder layer, ready to run: q, k and v fused into one matrix, gate and up into another (two GEMMs where the
/// checkpoint has five).
struct Layer {
    input_norm: Tensor,
    /// `[q | k | v]` rows of this rank's heads, and their biases.
    qkv: Tensor,
    qkv_bias: Tensor,
    o: Tensor,
    post_norm: Tensor,
    /// `[gate | up]` rows of this rank's FFN slice.
    gate_up: Tensor,
    down: Tensor,
}

impl LayerWeights {
    /// Concatenates q, k and v (and their biases) row-wise, and gate and up.
    fn fuse(self) -> Result<Layer> {
        Ok(Layer {
            input_norm: self.input_norm,
            qkv: k::concat(&[&self.q, &self.k, &self.v], 0)?,
            qkv_bias: k::concat(&[&self.q_bias, &self.k_bias, &self.v_bias], 0)?,
            o: self.o,
            post_norm: self.post_norm,
            gate_up: k::concat(&[&self.gate, &self.up], 0)?,
            down: self.down,
        })
    }
}

/// Qwen2 weights, ready to run.
pub struct Qwen2Model {
    /// Hyper-parameters.
    pub config: Qwen2Config,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Tensor,
    /// This rank's part of a tensor-parallel model (everything, without tensor parallelism).
    sharding: Sharding,
    comm: Option<Arc<dyn Comm>>,
    /// Decode steps captured as CUDA graphs (see `decode_graph`), and whether to use them.
    graphs: Mutex<DecodeGraphs>,
    graphs_on: AtomicBool,
    /// The RoPE frequencies on the device, when they do not depend on the length (no dynamic NTK).
    fixed_inv_freq: OnceLock<Tensor>,
}

impl Qwen2Model {
    /// Loads `{prefix}model.*` and `{prefix}lm_head.weight` (prefix `language_model.` in NVLM-D).
    pub fn load(
        weights: &dyn Weights,
        prefix: &str,
        config: &Qwen2Config,
        device: Device,
    ) -> Result<Qwen2Model> {
        let (h, d) = (config.hidden_size, config.head_dim());
        let (q_rows, kv_rows, ffn) = (
            config.num_heads * d,
            config.num_kv_heads * d,
            config.intermediate_size,
        );
        let w = |name: &str, shape: &[usize]| load_weight(weights, &format!("{prefix}{name}"), shape, device);
        let embed = w("model.embed_tokens.weight", &[config.vocab_size, h])?;
        let lm_head = if config.tie_word_embeddings {
            embed.clone()
        } else {
            w("lm_head.weight", &[config.vocab_size, h])?
        };
        let layers = (0..config.num_layers)
            .map(|l| {
                let p = format!("model.layers.{l}.");
                let lw = |name: &str, shape: &[usize]| w(&format!("{p}{name}"), shape);
                LayerWeights {
                    input_norm: lw("input_layernorm.weight", &[h])?,
                    q: lw("self_attn.q_proj.weight", &[q_rows, h])?,
                    q_bias: lw("self_attn.q_proj.bias", &[q_rows])?,
                    k: lw("self_attn.k_proj.weight", &[kv_rows, h])?,
                    k_bias: lw("self_attn.k_proj.bias", &[kv_rows])?,
                    v: lw("self_attn.v_proj.weight", &[kv_rows, h])?,
                    v_bias: lw("self_attn.v_proj.bias", &[kv_rows])?,
                    o: lw("self_attn.o_proj.weight", &[h, q_rows])?,
                    post_norm: lw("post_attention_layernorm.weight", &[h])?,
                    gate: lw("mlp.gate_proj.weight", &[ffn, h])?,
                    up: lw("mlp.up_proj.weight", &[ffn, h])?,
                    down: lw("mlp.down_proj.weight", &[h, ffn])?,
                }
                .fuse()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Qwen2Model {
            config: config.clone(),
            embed,
            layers,
            norm: w("model.norm.weight", &[h])?,
            lm_head,
            sharding: Sharding::whole(config),
            comm: None,
            graphs: Mutex::default(),
            graphs_on: AtomicBool::new(decode_graph::graphs_enabled()),
            fixed_inv_freq: OnceLock::new(),
        })
    }

    /// Loads rank `comm.rank()` of a tensor-parallel model (Megatron-style: column-parallel q/k/v and gate/up,
    /// row-parallel o and down with one all-reduce each, vocabulary-parallel embedding and LM head). Each rank reads
    /// only its slices of the weights.
    pub fn load_shard(
        weights: &dyn Weights,
        prefix: &str,
        config: &Qwen2Config,
        device: Device,
        comm: Arc<dyn Comm>,
    ) -> Result<Qwen2Model> {
        let sharding = Sharding::new(config, comm.rank(), comm.size())?;
        let (h, d) = (config.hidden_size, config.head_dim());
        let l = ShardedLoader {
            weights,
            prefix,
            device,
        };
        let s = &sharding;
        let (q0, qn) = (s.heads_start * d, s.heads * d);
        let (kv0, kvn) = (s.kv_start * d, s.kv_heads * d);
        let (f0, fn_) = (s.ffn_start, s.ffn);
        let (q_rows, kv_rows, ffn) = (
            config.num_heads * d,
            config.num_kv_heads * d,
            config.intermediate_size,
        );
        let layers = (0..config.num_layers)
            .map(|i| {
                let p = format!("model.layers.{i}.");
                LayerWeights {
                    input_norm: l.rows(&format!("{p}input_layernorm.weight"), &[h], 0, h)?,
                    q: l.rows(&format!("{p}self_attn.q_proj.weight"), &[q_rows, h], q0, qn)?,
                    q_bias: l.rows(&format!("{p}self_attn.q_proj.bias"), &[q_rows], q0, qn)?,
                    k: l.rows(&format!("{p}self_attn.k_proj.weight"), &[kv_rows, h], kv0, kvn)?,
                    k_bias: l.rows(&format!("{p}self_attn.k_proj.bias"), &[kv_rows], kv0, kvn)?,
                    v: l.rows(&format!("{p}self_attn.v_proj.weight"), &[kv_rows, h], kv0, kvn)?,
                    v_bias: l.rows(&format!("{p}self_attn.v_proj.bias"), &[kv_rows], kv0, kvn)?,
                    o: l.columns(&format!("{p}self_attn.o_proj.weight"), &[h, q_rows], q0, qn)?,
                    post_norm: l.rows(&format!("{p}post_attention_layernorm.weight"), &[h], 0, h)?,
                    gate: l.rows(&format!("{p}mlp.gate_proj.weight"), &[ffn, h], f0, fn_)?,
                    up: l.rows(&format!("{p}mlp.up_proj.weight"), &[ffn, h], f0, fn_)?,
                    down: l.columns(&format!("{p}mlp.down_proj.weight"), &[h, ffn], f0, fn_)?,
                }
                .fuse()
            })
            .collect::<Result<Vec<_>>>()?;
        let v = config.vocab_size;
        let embed = l.rows("model.embed_tokens.weight", &[v, h], s.vocab_start, s.vocab)?;
        let lm_head = if config.tie_word_embeddings {
            embed.clone()
        } else {
            l.rows("lm_head.weight", &[v, h], s.vocab_start, s.vocab)?
        };
        Ok(Qwen2Model {
            config: config.clone(),
            embed,
            layers,
            norm: l.rows("model.norm.weight", &[h], 0, h)?,
            lm_head,
            sharding,
            comm: Some(comm),
            graphs: Mutex::default(),
            graphs_on: AtomicBool::new(decode_graph::graphs_enabled()),
            fixed_inv_freq: OnceLock::new(),
        })
    }

    /// This rank's share of heads, FFN rows and vocabulary ([`Sharding::whole`] without tensor parallelism).
    pub fn sharding(&self) -> &Sharding {
        &self.sharding
    }

    /// Rank 0's `decision` on every rank (itself without tensor parallelism): callbacks that may stop generation
    /// run on every rank, and rank 0's answer is the one all ranks follow, so no rank waits in a collective alone.
    pub(crate) fn agree(&self, decision: bool) -> Result<bool> {
        let Some(comm) = &self.comm else {
            return Ok(decision);
        };
        let flag = Tensor::from_vec(vec![f32::from(u8::from(decision))], &[1])?;
        Ok(comm.broadcast(&flag, 0)?.to_f32_vec()?[0] != 0.0)
    }

    /// The sum over ranks of a row-parallel partial result (the identity without tensor parallelism).
    fn reduce(&self, partial: Tensor) -> Result<Tensor> {
        match &self.comm {
            Some(comm) => Ok(comm.all_reduce_sum(&partial)?),
            None => Ok(partial),
        }
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.embed.device()
    }

    /// Token embeddings `[n, H]` in `dtype`.
    pub fn embed(&self, ids: &[u32], dtype: nvlm_tensor::DType) -> Result<Tensor> {
        self.check_ids(ids)?;
        let sources: Vec<_> = ids.iter().map(|&id| self.table_row(id)).collect();
        self.gather_embeddings(&sources, None, dtype)
    }

    /// An error for an id outside the vocabulary.
    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        match ids.iter().find(|&&id| id as usize >= self.config.vocab_size) {
            Some(bad) => Err(crate::Qwen2Error::Input(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.config.vocab_size
            ))),
            None => Ok(()),
        }
    }

    /// Where token `id`'s embedding row is: in this rank's slice of the table, or (vocabulary-parallel) on another
    /// rank, which contributes it to the all-reduce while this one contributes zeros.
    fn table_row(&self, id: u32) -> k::RowSource {
        let s = &self.sharding;
        match (id as usize).checked_sub(s.vocab_start) {
            Some(row) if row < s.vocab => k::RowSource::Table(row),
            _ => k::RowSource::Zero,
        }
    }

    /// One gather over the embedding table (and the image rows), summed over the vocabulary-parallel ranks: each row
    /// is non-zero on one rank only, so the sum is exact in any dtype.
    fn gather_embeddings(
        &self,
        sources: &[k::RowSource],
        image_rows: Option<&Tensor>,
        dtype: nvlm_tensor::DType,
    ) -> Result<Tensor> {
        let rows = k::gather_rows(sources, &self.embed, image_rows, dtype)?;
        self.reduce(rows)
    }

    /// Runs `embeds[t, H]` (positions `len..len + t` of sequence `seq`) through every layer, appending to the KV
    /// cache, and returns the final-normed hidden states `[t, H]`.
    pub fn forward(&self, embeds: &Tensor, cache: &mut PagedKvCache, seq: SequenceId) -> Result<Tensor> {
        self.forward_traced(embeds, cache, seq, |_, _| {})
    }

    /// [`Qwen2Model::forward`], handing each layer's output (before the final norm) to `trace(layer, hidden)`.
    pub fn forward_traced(
        &self,
        embeds: &Tensor,
        cache: &mut PagedKvCache,
        seq: SequenceId,
        trace: impl FnMut(usize, &Tensor),
    ) -> Result<Tensor> {
        let t = embeds.shape()[0];
        let start = cache.len(seq)?;
        cache.reserve(seq, t)?;
        let segments = [Segment { seq, start, rows: t }];
        // transformers' dynamic NTK: the frequencies of max(position) + 1.
        let inv_freq = self.config.rope.inv_freq(start + t);
        self.run_layers(embeds, &segments, &inv_freq, cache, trace)
    }

    /// One decode step for several sequences at once: `tokens[i]` is the next token of `seqs[i]`. Returns the
    /// final-normed hidden states `[B, H]`, row `i` for `seqs[i]` — the same as [`Qwen2Model::forward`] on each
    /// alone, with the projections and MLP run once over all rows.
    pub fn decode_batch(
        &self,
        tokens: &[u32],
        cache: &mut PagedKvCache,
        seqs: &[SequenceId],
    ) -> Result<Tensor> {
        if tokens.len() != seqs.len() {
            return Err(crate::Qwen2Error::Input(format!(
                "decode_batch: {} tokens for {} sequences",
                tokens.len(),
                seqs.len()
            )));
        }
        if let Some(hidden) = self.decode_graphed(tokens, cache, seqs)? {
            return Ok(hidden);
        }
        let parts: Vec<(SequenceId, usize)> = seqs.iter().map(|&seq| (seq, 1)).collect();
        // Embeddings in the device's compute dtype (bf16 on a GPU, where the projections take bf16 only).
        let dtype = self.embed.device().compute_dtype();
        self.forward_step(&self.embed(tokens, dtype)?, cache, &parts)
    }

    /// [`Qwen2Model::decode_batch`] through a CUDA graph of its shape (module `decode_graph`), or `None` where graphs
    /// do not apply: off the GPU, past the length where dynamic NTK changes the frequencies, or with
    /// `NVLM_CUDA_GRAPHS=0`.
    fn decode_graphed(
        &self,
        tokens: &[u32],
        cache: &mut PagedKvCache,
        seqs: &[SequenceId],
    ) -> Result<Option<Tensor>> {
        let device = self.device();
        if !matches!(device, Device::Cuda(_)) || !self.graphs_on.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let mut longest = 0;
        for &seq in seqs {
            longest = longest.max(cache.len(seq)?);
        }
        // Dynamic NTK changes the frequencies past `max_position_embeddings` (32k for NVLM-D): op by op from there.
        let rope = &self.config.rope;
        if rope.base_for(longest + 1) != rope.theta {
            return Ok(None);
        }
        self.check_ids(tokens)?;
        for &seq in seqs {
            cache.reserve(seq, 1)?;
        }
        let key_bound = decode_graph::key_bound(longest);
        let inv_freq = self.fixed_inv_freq()?;
        let dtype = device.compute_dtype();
        let mut graphs = self.graphs.lock().unwrap_or_else(|p| p.into_inner());
        let (shape, new) = graphs.shape(cache.id(), tokens.len(), key_bound, || {
            decode_graph::new_shape(
                device,
                tokens.len(),
                cache.num_blocks(),
                self.config.hidden_size,
                dtype,
            )
        })?;
        let codes: Vec<i32> = tokens.iter().map(|&t| self.table_row(t).code() as i32).collect();
        shape.codes.write_from_host(&codes)?;
        let parts: Vec<(SequenceId, usize)> = seqs.iter().map(|&seq| (seq, 1)).collect();
        let rows = cache.paged_rows_in(&parts, &mut shape.rows, key_bound)?;
        let segments: Vec<Segment> = seqs
            .iter()
            .zip(rows.positions())
            .map(|(&seq, &start)| Segment { seq, start, rows: 1 })
            .collect();
        // The step: embeddings from the fixed sources, every layer, the final norm into the fixed output.
        let queue = |shape: &mut decode_graph::DecodeShape, cache: &mut PagedKvCache| -> Result<()> {
            let embeds = self.reduce(k::gather_table_rows_encoded(&shape.codes, &self.embed, dtype)?)?;
            let step = Step {
                inv_freq,
                rows: &rows,
                segments: &segments,
                single_rows: None,
            };
            let hidden = self.layers_and_norm(&embeds, &step, cache, |_, _| {})?;
            Ok(shape.hidden.copy_from(&hidden)?)
        };
        match &shape.graph {
            Some(graph) => graph.launch()?,
            None if new => queue(shape, cache)?,
            None => {
                let captured = nvlm_tensor::DeviceGraph::capture(device, || {
                    queue(shape, cache).map_err(|e| nvlm_tensor::TensorError::Device {
                        op: "decode graph capture",
                        detail: e.to_string(),
                    })
                });
                match captured {
                    Ok((graph, ())) => {
                        graph.launch()?;
                        shape.graph = Some(graph);
                    }
                    Err(error) => {
                        // Nothing of the step ran (a capture only records): it runs op by op, as every later step.
                        eprintln!("nvlm: capturing a decode step as a CUDA graph failed ({error}); decoding op by op");
                        self.set_decode_graphs(false);
                        return Ok(None);
                    }
                }
            }
        }
        for &seq in seqs {
            cache.advance(seq, 1)?;
        }
        // A copy: the output buffer is rewritten by the next step.
        Ok(Some(shape.hidden.deep_copy()?))
    }

    /// Turns CUDA-graph decode steps on or off for this model (on unless `NVLM_CUDA_GRAPHS=0`), for comparing the
    /// two paths.
    pub fn set_decode_graphs(&self, on: bool) {
        self.graphs_on.store(on, Ordering::Relaxed);
    }

    /// How many decode shapes (batch size, context bucket) of the current KV cache are captured as CUDA graphs.
    pub fn decode_graphs_captured(&self) -> usize {
        self.graphs.lock().unwrap_or_else(|p| p.into_inner()).captured()
    }

    /// The RoPE frequencies on the device below the dynamic-NTK threshold (where they do not change), uploaded once.
    fn fixed_inv_freq(&self) -> Result<&Tensor> {
        if let Some(t) = self.fixed_inv_freq.get() {
            return Ok(t);
        }
        let freq = self.config.rope.inv_freq(1); // the base, θ, below the threshold
        let t = Tensor::from_slice(&freq, &[freq.len()], self.device())?;
        Ok(self.fixed_inv_freq.get_or_init(|| t))
    }

    /// One forward pass over new rows of several sequences: `parts[i] = (seq, rows)` says the next `rows` rows of
    /// `embeds` are the next positions of `seq` (a decode token, or a chunk of a prompt). Returns the final-normed
    /// hidden states of all rows, in order — each sequence's rows as [`Qwen2Model::forward`] gives them alone.
    pub fn forward_step(
        &self,
        embeds: &Tensor,
        cache: &mut PagedKvCache,
        parts: &[(SequenceId, usize)],
    ) -> Result<Tensor> {
        let total: usize = parts.iter().map(|p| p.1).sum();
        if parts.is_empty() || total != embeds.shape()[0] {
            return Err(crate::Qwen2Error::Input(format!(
                "forward_step: {} rows of embeddings for parts of {total} rows",
                embeds.shape()[0]
            )));
        }
        let mut segments = Vec::with_capacity(parts.len());
        for &(seq, rows) in parts {
            segments.push(Segment {
                seq,
                start: cache.len(seq)?,
                rows,
            });
        }
        // Dynamic NTK makes the frequencies depend on each sequence's length; rows share one set of frequencies, so
        // sequences past the scaling threshold go one by one.
        let inv_freq = self.config.rope.inv_freq(segments[0].start + segments[0].rows);
        if segments
            .iter()
            .any(|s| self.config.rope.inv_freq(s.start + s.rows) != inv_freq)
        {
            let mut row = 0;
            let mut outputs = Vec::with_capacity(parts.len());
            for &(seq, rows) in parts {
                outputs.push(self.forward(&embeds.narrow0(row, rows)?, cache, seq)?);
                row += rows;
            }
            return Ok(k::concat(&outputs.iter().collect::<Vec<_>>(), 0)?);
        }
        for s in &segments {
            cache.reserve(s.seq, s.rows)?;
        }
        self.run_layers(embeds, &segments, &inv_freq, cache, |_, _| {})
    }

    /// Every layer over rows that belong to `segments` (consecutive rows of one sequence each), then the cache
    /// lengths advance and the final norm applies.
    fn run_layers(
        &self,
        embeds: &Tensor,
        segments: &[Segment],
        inv_freq: &[f32],
        cache: &mut PagedKvCache,
        trace: impl FnMut(usize, &Tensor),
    ) -> Result<Tensor> {
        // Uploaded once per step, shared by every layer's RoPE, cache write and attention.
        let inv_freq = Tensor::from_slice(inv_freq, &[inv_freq.len()], embeds.device())?;
        let parts: Vec<_> = segments.iter().map(|s| (s.seq, s.rows)).collect();
        let rows = cache.paged_rows(&parts)?;
        let mixed = segments.len() > 1 && segments.iter().any(|s| s.rows > 1);
        let single_parts: Vec<_> = parts.iter().copied().filter(|p| p.1 == 1).collect();
        let single_rows = match mixed && !single_parts.is_empty() {
            true => Some(cache.paged_rows(&single_parts)?),
            false => None,
        };
        let step = Step {
            inv_freq: &inv_freq,
            rows: &rows,
            segments,
            single_rows: single_rows.as_ref(),
        };
        let hidden = self.layers_and_norm(embeds, &step, cache, trace)?;
        for s in segments {
            cache.advance(s.seq, s.rows)?;
        }
        Ok(hidden)
    }

    /// Every layer over `embeds` (the rows of `step`), then the final norm; the cache lengths are the caller's.
    fn layers_and_norm(
        &self,
        embeds: &Tensor,
        step: &Step,
        cache: &mut PagedKvCache,
        mut trace: impl FnMut(usize, &Tensor),
    ) -> Result<Tensor> {
        let mut x = embeds.clone();
        for (l, layer) in self.layers.iter().enumerate() {
            x = self.layer(l, layer, &x, step, cache)?;
            trace(l, &x);
        }
        Ok(k::rms_norm(&x, &self.norm, self.config.rms_norm_eps)?)
    }

    fn layer(
        &self,
        index: usize,
        l: &Layer,
        x: &Tensor,
        step: &Step,
        cache: &mut PagedKvCache,
    ) -> Result<Tensor> {
        let c = &self.config;
        let d = c.head_dim();
        let h = k::rms_norm(x, &l.input_norm, c.rms_norm_eps)?;
        let (heads, kv_heads) = (self.sharding.heads, self.sharding.kv_heads);
        let qkv = k::matmul(&h, &l.qkv, Some(&l.qkv_bias))?;
        let q = cache.write_rope_qkv(index, &qkv, step.inv_freq, [heads, kv_heads], step.rows)?;
        let scale = 1.0 / (d as f32).sqrt();
        // A prefill chunk of one sequence: its queries over its cache (the prefill kernel); decode rows of several
        // sequences: every row over its own sequence in one launch (split-K over the context on a GPU); both mixed:
        // each chunk on the prefill kernel, the single rows together.
        let attn = match step.segments {
            [one] if one.rows > 1 => cache.attention(index, one.seq, &q, scale)?,
            segments if segments.iter().all(|s| s.rows == 1) => {
                cache.attention_rows(index, &q, step.rows, scale)?
            }
            _ => self.mixed_attention(index, &q, step, cache, scale)?,
        };
        let attn = attn.reshape(&[q.shape()[0], heads * d])?;
        let o = self.reduce(k::matmul(&attn, &l.o, None)?)?;
        let (h, x) = k::add_rms_norm(&o, x, &l.post_norm, c.rms_norm_eps)?;
        let mlp = self.reduce(k::matmul(
            &k::silu_mul(&k::matmul(&h, &l.gate_up, None)?)?,
            &l.down,
            None,
        )?)?;
        Ok(k::add(&x, &mlp)?)
    }

    /// Attention of a step mixing prompt chunks with single rows (continuous batching with chunked prefill): each
    /// chunk over its sequence's cache with the prefill kernel, the single rows in one launch, reassembled in order.
    fn mixed_attention(
        &self,
        index: usize,
        q: &Tensor,
        step: &Step,
        cache: &PagedKvCache,
        scale: f32,
    ) -> Result<Tensor> {
        let mut starts = Vec::with_capacity(step.segments.len());
        let mut row = 0;
        for s in step.segments {
            starts.push(row);
            row += s.rows;
        }
        let singles: Vec<Tensor> = step
            .segments
            .iter()
            .zip(&starts)
            .filter(|(s, _)| s.rows == 1)
            .map(|(_, &start)| q.narrow0(start, 1))
            .collect::<std::result::Result<_, _>>()?;
        let single_out = match step.single_rows {
            Some(rows) => Some(cache.attention_rows(
                index,
                &k::concat(&singles.iter().collect::<Vec<_>>(), 0)?,
                rows,
                scale,
            )?),
            None => None,
        };
        let mut pieces = Vec::with_capacity(step.segments.len());
        let mut next_single = 0;
        for (s, &start) in step.segments.iter().zip(&starts) {
            if s.rows == 1 {
                let out = single_out.as_ref().ok_or_else(|| {
                    crate::Qwen2Error::Cache("a step's single rows were not planned with it".into())
                })?;
                pieces.push(out.narrow0(next_single, 1)?);
                next_single += 1;
            } else {
                pieces.push(cache.attention(index, s.seq, &q.narrow0(start, s.rows)?, scale)?);
            }
        }
        Ok(k::concat(&pieces.iter().collect::<Vec<_>>(), 0)?)
    }

    /// Logits `[n, vocab]` (f32) of final-normed hidden states `[n, H]`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.gather_vocab(&k::cast(
            &k::matmul(hidden, &self.lm_head, None)?,
            nvlm_tensor::DType::F32,
        )?)
    }

    /// The whole logits `[n, vocab]` from this rank's slice `[n, vocab / tp]` ([`Qwen2Model::local_logits`]):
    /// gathered from every rank under tensor parallelism, `local` itself without.
    pub fn gather_vocab(&self, local: &Tensor) -> Result<Tensor> {
        let Some(comm) = &self.comm else {
            return Ok(local.clone());
        };
        // Vocabulary-parallel LM head: gather [V/tp, n] from every rank (rank-major) and transpose back.
        let local = local.clone();
        let n = local.shape()[0];
        let gathered = comm.all_gather(&k::transpose_last2(&local)?)?;
        Ok(k::transpose_last2(&gathered)?.reshape(&[n, self.config.vocab_size])?)
    }

    /// This rank's slice of the logits `[n, vocab / tp]` (f32) and the first id it covers, with the group, when the
    /// LM head is vocabulary-parallel; `None` without tensor parallelism.
    pub fn local_logits(&self, hidden: &Tensor) -> Result<Option<(Tensor, usize, &dyn Comm)>> {
        let Some(comm) = &self.comm else { return Ok(None) };
        let local = k::cast(&k::matmul(hidden, &self.lm_head, None)?, nvlm_tensor::DType::F32)?;
        Ok(Some((local, self.sharding.vocab_start, comm.as_ref())))
    }

    /// A KV cache sized for `max_positions` positions in blocks of 16, on the model's device in its compute dtype.
    pub fn new_cache(&self, max_positions: usize) -> Result<PagedKvCache> {
        self.new_cache_for(1, max_positions)
    }

    /// A paged KV cache with room for `sequences` sequences of up to `positions` positions each (every sequence
    /// takes whole blocks, so this is not `new_cache(sequences * positions)`, which can fall a block short per
    /// sequence).
    pub fn new_cache_for(&self, sequences: usize, positions: usize) -> Result<PagedKvCache> {
        const BLOCK: usize = 16;
        let device = self.embed.device();
        PagedKvCache::new(
            self.config.num_layers,
            [self.sharding.kv_heads, self.config.head_dim()],
            BLOCK,
            sequences * positions.div_ceil(BLOCK),
            device,
            device.compute_dtype(),
        )
    }
}

impl Qwen2Model {
    /// Embeddings of `ids` with the rows at `<|vision_pad|>` positions replaced, in order, by `image_rows`
    /// (`[n, H]`, tile-major). The number of `<|vision_pad|>` ids must equal `n`.
    pub fn embed_multimodal(
        &self,
        ids: &[u32],
        image_rows: Option<&Tensor>,
        dtype: nvlm_tensor::DType,
    ) -> Result<Tensor> {
        self.check_ids(ids)?;
        let image_tokens = ids
            .iter()
            .filter(|&&id| id == crate::IMAGE_CONTEXT_TOKEN_ID)
            .count();
        let rows = image_rows.map_or(0, |r| r.shape()[0]);
        if image_tokens != rows {
            return Err(crate::Qwen2Error::Input(format!(
                "the prompt has {image_tokens} <|vision_pad|> tokens but the images give {rows} embedding rows (one per image token)"
            )));
        }
        // Under tensor parallelism every rank holds the image rows; rank 0 places them, the others add zeros.
        let places_images = self.comm.as_ref().is_none_or(|c| c.rank() == 0);
        let mut next_image_row = 0;
        let sources: Vec<_> = ids
            .iter()
            .map(|&id| {
                if id != crate::IMAGE_CONTEXT_TOKEN_ID {
                    self.table_row(id)
                } else if places_images {
                    next_image_row += 1;
                    k::RowSource::Extra(next_image_row - 1)
                } else {
                    k::RowSource::Zero
                }
            })
            .collect();
        let image_rows = match image_rows {
            Some(r) if rows > 0 && places_images => Some(k::cast(r, dtype)?),
            _ => None,
        };
        self.gather_embeddings(&sources, image_rows.as_ref(), dtype)
    }
}
