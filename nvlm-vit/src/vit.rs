//! InternViT with NVLM-D's dummy-head layout, and the whole vision tower (ViT, pixel shuffle, projector).

use nvlm_kernels as k;
use nvlm_kernels::AttentionMask;
use std::sync::Arc;

use nvlm_dist::Comm;
use nvlm_tensor::{load_weight, load_weight_columns, load_weight_rows, DType, Device, Tensor, Weights};

use crate::projector::Projector;
use crate::tensor_parallel::ViTSharding;
use crate::{Result, VisionConfig};

/// One encoder layer's weights.
struct Layer {
    norm1: Tensor,
    qkv: Tensor,
    q_norm: Tensor,
    k_norm: Tensor,
    proj: Tensor,
    proj_bias: Tensor,
    ls1: Tensor,
    norm2: Tensor,
    fc1: Tensor,
    fc1_bias: Tensor,
    fc2: Tensor,
    fc2_bias: Tensor,
    ls2: Tensor,
}

/// InternViT-6B (embeddings and encoder; no final norm, as NVLM-D uses `last_hidden_state`).
pub struct InternVit {
    config: VisionConfig,
    /// This rank's heads and FFN rows, in the form that runs (dummy heads sliced away or kept).
    sharding: ViTSharding,
    /// The tensor-parallel group; `None` without tensor parallelism.
    comm: Option<Arc<dyn Comm>>,
    class_embedding: Tensor,
    patch_weight: Tensor,
    patch_bias: Tensor,
    position_embedding: Tensor,
    layers: Vec<Layer>,
}

fn all_zero(t: &Tensor) -> Result<bool> {
    Ok(t.to_f32_vec()?.iter().all(|&v| v == 0.0))
}

/// True when every dummy part of every layer is zero (q/k/v rows of the dummy heads, the q-norm's dummy entries,
/// `proj`'s dummy input columns): then the dummy heads contribute exactly nothing. Reads only the dummy slices.
fn dummy_heads_are_zero(weights: &dyn Weights, config: &VisionConfig) -> Result<bool> {
    let (c, d) = (config.hidden_size, config.head_dim());
    let (real, padded) = (
        config.num_heads * d,
        (config.num_heads + config.num_dummy_heads) * d,
    );
    let (dummy, host) = (padded - real, Device::Cpu);
    if dummy == 0 {
        return Ok(true);
    }
    for l in 0..config.num_layers {
        let p = format!("vision_model.encoder.layers.{l}.attn");
        let qkv = format!("{p}.qkv.weight");
        for part in 0..3 {
            if !all_zero(&load_weight_rows(
                weights,
                &qkv,
                &[3 * padded, c],
                part * padded + real,
                dummy,
                host,
            )?)? {
                return Ok(false);
            }
        }
        let q_norm = load_weight_rows(
            weights,
            &format!("{p}.q_norm.weight"),
            &[padded],
            real,
            dummy,
            host,
        )?;
        let proj = load_weight_columns(
            weights,
            &format!("{p}.proj.weight"),
            &[c, padded],
            real,
            dummy,
            host,
        )?;
        if !all_zero(&q_norm)? || !all_zero(&proj)? {
            return Ok(false);
        }
    }
    Ok(true)
}

impl InternVit {
    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.class_embedding.device()
    }

    /// Loads `vision_model.*` from `weights`, computing in `dtype` on `device`.
    ///
    /// The HF checkpoint stores 25 real heads padded with 7 dummy heads. When the dummy parts of `qkv`, the q/k
    /// norms and the input columns of `proj` are all zero, the dummy heads contribute exactly nothing (their
    /// attention output is multiplied by zero columns), and the QK-norm variance is taken over the real channels
    /// anyway, so they are sliced away here and the layer runs as a plain 25-head ViT: exact, and 22% less work.
    /// Otherwise the padded form runs, with the variance over the real channels only.
    pub fn load(
        weights: &dyn Weights,
        config: &VisionConfig,
        device: Device,
        dtype: DType,
    ) -> Result<InternVit> {
        InternVit::load_ranked(weights, config, device, dtype, None)
    }

    /// Loads rank `comm.rank()` of a tensor-parallel ViT: heads split across ranks (the real heads when the dummy
    /// heads are zero and the ranks divide them, else all 32 stored heads, 4 a rank at TP=8), the QK-norm variance
    /// an all-reduced sum of squares over the real channels, column-parallel `qkv`/`fc1`, row-parallel `proj`/`fc2`
    /// with one all-reduce each. Each rank reads only its slices.
    pub fn load_shard(
        weights: &dyn Weights,
        config: &VisionConfig,
        device: Device,
        dtype: DType,
        comm: Arc<dyn Comm>,
    ) -> Result<InternVit> {
        InternVit::load_ranked(weights, config, device, dtype, Some(comm))
    }

    fn load_ranked(
        weights: &dyn Weights,
        config: &VisionConfig,
        device: Device,
        dtype: DType,
        comm: Option<Arc<dyn Comm>>,
    ) -> Result<InternVit> {
        let (c, d) = (config.hidden_size, config.head_dim());
        let padded = (config.num_heads + config.num_dummy_heads) * d;
        let (rank, size) = comm.as_ref().map_or((0, 1), |comm| (comm.rank(), comm.size()));
        let sharding = ViTSharding::new(config, rank, size, || dummy_heads_are_zero(weights, config))?;
        let host = Device::Cpu;
        let e = "vision_model.embeddings";
        let grid = config.grid();
        let class_embedding = k::cast(
            &load_weight(weights, &format!("{e}.class_embedding"), &[1, 1, c], host)?,
            dtype,
        )?;
        let position_embedding = k::cast(
            &load_weight(
                weights,
                &format!("{e}.position_embedding"),
                &[1, grid * grid + 1, c],
                host,
            )?,
            dtype,
        )?;
        let patch = config.patch_size;
        let patch_weight = load_weight(
            weights,
            &format!("{e}.patch_embedding.weight"),
            &[c, 3, patch, patch],
            host,
        )?;
        let patch_bias = load_weight(weights, &format!("{e}.patch_embedding.bias"), &[c], host)?;
        let (h0, width) = (sharding.heads_start * d, sharding.heads * d);
        let (f0, ffn, inter) = (sharding.ffn_start, sharding.ffn, config.intermediate_size);
        let layers = (0..config.num_layers)
            .map(|l| {
                let p = format!("vision_model.encoder.layers.{l}");
                let name = |n: &str| format!("{p}.{n}");
                let w = |n: &str, shape: &[usize]| load_weight(weights, &name(n), shape, host);
                let rows = |n: &str, shape: &[usize], start, len| {
                    load_weight_rows(weights, &name(n), shape, start, len, host)
                };
                let columns = |n: &str, shape: &[usize], start, len| {
                    load_weight_columns(weights, &name(n), shape, start, len, host)
                };
                // Row-parallel biases are added once, by rank 0, so the all-reduced sum holds them once.
                let bias_once = |n: &str| -> Result<Tensor> {
                    let bias = w(n, &[c])?;
                    Ok(if rank == 0 {
                        bias
                    } else {
                        Tensor::zeros(bias.shape(), bias.dtype(), host)?
                    })
                };
                let qkv_parts: Vec<Tensor> = (0..3)
                    .map(|part| rows("attn.qkv.weight", &[3 * padded, c], part * padded + h0, width))
                    .collect::<Result<_, _>>()?;
                Ok(Layer {
                    norm1: w("norm1.weight", &[c])?,
                    qkv: k::concat(&qkv_parts.iter().collect::<Vec<_>>(), 0)?,
                    q_norm: rows("attn.q_norm.weight", &[padded], h0, width)?,
                    k_norm: rows("attn.k_norm.weight", &[padded], h0, width)?,
                    proj: columns("attn.proj.weight", &[c, padded], h0, width)?,
                    proj_bias: bias_once("attn.proj.bias")?,
                    ls1: w("ls1", &[c])?,
                    norm2: w("norm2.weight", &[c])?,
                    fc1: rows("mlp.fc1.weight", &[inter, c], f0, ffn)?,
                    fc1_bias: rows("mlp.fc1.bias", &[inter], f0, ffn)?,
                    fc2: columns("mlp.fc2.weight", &[c, inter], f0, ffn)?,
                    fc2_bias: bias_once("mlp.fc2.bias")?,
                    ls2: w("ls2", &[c])?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut vit = InternVit {
            config: config.clone(),
            sharding,
            comm,
            class_embedding,
            patch_weight,
            patch_bias,
            position_embedding,
            layers,
        };
        vit.move_to(device)?;
        Ok(vit)
    }

    fn move_to(&mut self, device: Device) -> Result<()> {
        if device == Device::Cpu {
            return Ok(());
        }
        let move_ = |t: &mut Tensor| -> Result<()> {
            *t = t.weight_on(device)?;
            Ok(())
        };
        for t in [
            &mut self.class_embedding,
            &mut self.patch_weight,
            &mut self.patch_bias,
            &mut self.position_embedding,
        ] {
            move_(t)?;
        }
        for l in &mut self.layers {
            for t in [
                &mut l.norm1,
                &mut l.qkv,
                &mut l.q_norm,
                &mut l.k_norm,
                &mut l.proj,
                &mut l.proj_bias,
                &mut l.ls1,
                &mut l.norm2,
                &mut l.fc1,
                &mut l.fc1_bias,
                &mut l.fc2,
                &mut l.fc2_bias,
                &mut l.ls2,
            ] {
                move_(t)?;
            }
        }
        Ok(())
    }

    /// True when the dummy heads were sliced away at load time.
    pub fn dummy_heads_sliced(&self) -> bool {
        !self.sharding.padded
    }

    /// The sum over ranks of a row-parallel partial result (the identity without tensor parallelism).
    fn reduce(&self, partial: Tensor) -> Result<Tensor> {
        match &self.comm {
            Some(comm) => Ok(comm.all_reduce_sum(&partial)?),
            None => Ok(partial),
        }
    }

    /// The fused qkv projection split into q, k, v with InternViT's QK-norm on q and k: RMSNorm over all heads
    /// concatenated, the mean square over the real channels only. Alone, one fused pass; with tensor parallelism this
    /// rank's real channels (first in its slice) give sums of squares that are all-reduced first.
    fn qk_norm(&self, qkv: &Tensor, l: &Layer) -> Result<[Tensor; 3]> {
        let eps = self.config.norm_eps;
        let d = self.config.head_dim();
        let real = self.config.num_heads * d;
        let Some(comm) = &self.comm else {
            return Ok(k::qkv_qk_norm(qkv, &l.q_norm, &l.k_norm, eps, real)?);
        };
        let width = self.sharding.heads * d;
        let [q, key, v]: [Tensor; 3] = k::split(qkv, qkv.rank() - 1, &[width, width, width])?
            .try_into()
            .expect("three parts");
        let local_real = self.sharding.real_heads * d;
        let norm = |x: &Tensor, weight: &Tensor| -> Result<Tensor> {
            let sums = comm.all_reduce_sum(&k::row_sum_squares(x, 0, local_real)?)?;
            Ok(k::rms_norm_with_sum_squares(x, weight, eps, &sums, real)?)
        };
        Ok([norm(&q, &l.q_norm)?, norm(&key, &l.k_norm)?, v])
    }

    /// `pixel_values[T, 3, 448, 448]` to the last layer's hidden states `[T, 1025, C]` (CLS at index 0).
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        self.forward_traced(pixel_values, |_, _| {})
    }

    /// [`InternVit::forward`], handing the embeddings (`0`) and each layer's output (`l + 1`) to `trace`.
    pub fn forward_traced(
        &self,
        pixel_values: &Tensor,
        mut trace: impl FnMut(usize, &Tensor),
    ) -> Result<Tensor> {
        let mut x = self.embeddings(pixel_values)?;
        trace(0, &x);
        for (l, layer) in self.layers.iter().enumerate() {
            x = self.layer(layer, &x)?;
            trace(l + 1, &x);
        }
        Ok(x)
    }

    /// Patch embedding, CLS token, position embedding.
    pub fn embeddings(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let (size, grid) = (self.config.image_size, self.config.grid());
        if pixel_values.rank() != 4 || pixel_values.shape()[1..] != [3, size, size] {
            return Err(crate::VitError::Config(format!(
                "pixel values must be [T, 3, {size}, {size}] (tiles of the configured size; the position embedding is \
                 not interpolated, as in the HF NVLM-D code), found {:?}",
                pixel_values.shape()
            )));
        }
        let tiles = pixel_values.shape()[0];
        let c = self.config.hidden_size;
        let patches = k::patch_embed(pixel_values, &self.patch_weight, &self.patch_bias)?; // [T, 1024, C]
        let cls = self.class_embedding.reshape(&[1, c])?;
        let with_cls: Vec<Tensor> = (0..tiles)
            .map(|t| k::concat(&[&cls, &patches.index0(t)?], 0).map_err(crate::VitError::from))
            .collect::<Result<_>>()?;
        let x = k::concat(&with_cls.iter().collect::<Vec<_>>(), 0)?.reshape(&[tiles, grid * grid + 1, c])?;
        let pos = self.position_embedding.reshape(&[grid * grid + 1, c])?;
        let pos_all = k::concat(&vec![&pos; tiles], 0)?.reshape(x.shape())?;
        Ok(k::add(&x, &pos_all)?)
    }

    /// One encoder layer: attention block and MLP block, each with RMSNorm in front and LayerScale behind.
    fn layer(&self, l: &Layer, x: &Tensor) -> Result<Tensor> {
        let eps = self.config.norm_eps;
        let [tiles, n, c] = [x.shape()[0], x.shape()[1], x.shape()[2]];
        let d = self.config.head_dim();
        let heads = self.sharding.heads;
        let width = heads * d;

        let h = k::rms_norm(x, &l.norm1, eps)?;
        let qkv = k::matmul(&h, &l.qkv, None)?;
        let [q, key, v] = self.qk_norm(&qkv, l)?;
        let shape = [tiles, n, heads, d];
        let attn = k::attention(
            &q.reshape(&shape)?,
            &key.reshape(&shape)?,
            &v.reshape(&shape)?,
            AttentionMask::Bidirectional,
            1.0 / (d as f32).sqrt(),
        )?;
        let o = self.reduce(k::matmul(
            &attn.reshape(&[tiles, n, width])?,
            &l.proj,
            Some(&l.proj_bias),
        )?)?;
        let x = k::add_scaled_channels(x, &o, &l.ls1)?;

        let h = k::rms_norm(&x, &l.norm2, eps)?;
        let m = k::gelu(&k::matmul(&h, &l.fc1, Some(&l.fc1_bias))?)?;
        let m = self.reduce(k::matmul(&m, &l.fc2, Some(&l.fc2_bias))?)?;
        debug_assert_eq!(m.shape(), [tiles, n, c]);
        Ok(k::add_scaled_channels(&x, &m, &l.ls2)?)
    }
}

/// Every stage of the vision tower, for inspection and tests.
pub struct VisionOutput {
    /// ViT last hidden state `[T, 1025, C]` (CLS included).
    pub vit_last_hidden_state: Tensor,
    /// After pixel shuffle `[T, 256, 4C]`.
    pub pixel_shuffle: Tensor,
    /// After the projector's LayerNorm.
    pub projector_norm: Tensor,
    /// After the projector's first Linear (before GELU).
    pub projector_fc1: Tensor,
    /// Image embeddings for the LLM `[T, 256, H]`.
    pub embeddings: Tensor,
}

/// ViT + pixel shuffle + projector.
pub struct VisionTower {
    /// The encoder.
    pub vit: InternVit,
    /// The `mlp1` projector.
    pub projector: Projector,
}

impl VisionTower {
    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.vit.device()
    }

    /// Loads the tower for an LLM of width `llm_hidden` with projector width `projector_hidden`.
    pub fn load(
        weights: &dyn Weights,
        config: &VisionConfig,
        projector_hidden: usize,
        llm_hidden: usize,
        device: Device,
        dtype: DType,
    ) -> Result<VisionTower> {
        let widths = [4 * config.hidden_size, projector_hidden, llm_hidden];
        Ok(VisionTower {
            vit: InternVit::load(weights, config, device, dtype)?,
            projector: Projector::load(
                weights,
                widths[0],
                widths[1],
                widths[2],
                config.projector_eps,
                device,
            )?,
        })
    }

    /// Loads rank `comm.rank()` of a tensor-parallel tower ([`InternVit::load_shard`], [`Projector::load_shard`]).
    pub fn load_shard(
        weights: &dyn Weights,
        config: &VisionConfig,
        projector_hidden: usize,
        llm_hidden: usize,
        device: Device,
        dtype: DType,
        comm: Arc<dyn Comm>,
    ) -> Result<VisionTower> {
        let widths = [4 * config.hidden_size, projector_hidden, llm_hidden];
        Ok(VisionTower {
            vit: InternVit::load_shard(weights, config, device, dtype, comm.clone())?,
            projector: Projector::load_shard(weights, widths, config.projector_eps, device, comm)?,
        })
    }

    /// `pixel_values[T, 3, 448, 448]` to image embeddings `[T, 256, H]`, with every intermediate stage.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<VisionOutput> {
        let hidden = self.vit.forward(pixel_values)?;
        let [tiles, n, c] = [hidden.shape()[0], hidden.shape()[1], hidden.shape()[2]];
        let grid = self.vit.config.grid();
        // Drop CLS: tokens 1..n of every tile.
        let tokens: Vec<Tensor> = (0..tiles)
            .map(|t| hidden.index0(t)?.narrow0(1, n - 1))
            .collect::<Result<_, _>>()?;
        let tokens = k::concat(&tokens.iter().collect::<Vec<_>>(), 0)?.reshape(&[tiles, grid, grid, c])?;
        let shuffled = k::pixel_shuffle(&tokens)?;
        let (norm, fc1, embeddings) = self.projector.forward(&shuffled)?;
        Ok(VisionOutput {
            vit_last_hidden_state: hidden,
            pixel_shuffle: shuffled,
            projector_norm: norm,
            projector_fc1: fc1,
            embeddings,
        })
    }
}
