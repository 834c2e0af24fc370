//! InternViT with NVLM-D's dummy-head layout, and the whole vision tower (ViT, pixel shuffle, projector).

use nvlm_kernels as k;
use nvlm_kernels::AttentionMask;
use nvlm_tensor::{load_weight, DType, Device, Tensor, Weights};

use crate::projector::Projector;
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
    /// Heads the weights hold: the real ones when the dummy heads were sliced away, else real + dummy.
    heads: usize,
    class_embedding: Tensor,
    patch_weight: Tensor,
    patch_bias: Tensor,
    position_embedding: Tensor,
    layers: Vec<Layer>,
}

fn all_zero(t: &Tensor) -> Result<bool> {
    Ok(t.to_f32_vec()?.iter().all(|&v| v == 0.0))
}

impl InternVit {
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
        let (c, d) = (config.hidden_size, config.head_dim());
        let padded = (config.num_heads + config.num_dummy_heads) * d;
        let real = config.num_heads * d;
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
        let mut layers = Vec::with_capacity(config.num_layers);
        let mut sliced = true;
        for l in 0..config.num_layers {
            let p = format!("vision_model.encoder.layers.{l}");
            let w = |name: &str, shape: &[usize]| load_weight(weights, &format!("{p}.{name}"), shape, host);
            let qkv = w("attn.qkv.weight", &[3 * padded, c])?;
            let q_norm = w("attn.q_norm.weight", &[padded])?;
            let k_norm = w("attn.k_norm.weight", &[padded])?;
            let proj = w("attn.proj.weight", &[c, padded])?;
            // Dummy parts: q/k/v rows of heads >= num_heads, norm entries and proj columns beyond `real`.
            let dummy_rows = (0..3).map(|part| qkv.narrow0(part * padded + real, padded - real));
            let proj_dummy = &k::split(&proj, 1, &[real, padded - real])?[1];
            let mut zero = all_zero(proj_dummy)? && all_zero(&q_norm.narrow0(real, padded - real)?)?;
            for rows in dummy_rows {
                zero = zero && all_zero(&rows?)?;
            }
            sliced &= zero;
            layers.push(Layer {
                norm1: w("norm1.weight", &[c])?,
                qkv,
                q_norm,
                k_norm,
                proj,
                proj_bias: w("attn.proj.bias", &[c])?,
                ls1: w("ls1", &[c])?,
                norm2: w("norm2.weight", &[c])?,
                fc1: w("mlp.fc1.weight", &[config.intermediate_size, c])?,
                fc1_bias: w("mlp.fc1.bias", &[config.intermediate_size])?,
                fc2: w("mlp.fc2.weight", &[c, config.intermediate_size])?,
                fc2_bias: w("mlp.fc2.bias", &[c])?,
                ls2: w("ls2", &[c])?,
            });
        }
        if sliced {
            for layer in &mut layers {
                let parts: Vec<Tensor> = (0..3)
                    .map(|p| layer.qkv.narrow0(p * padded, real))
                    .collect::<Result<_, _>>()?;
                layer.qkv = k::concat(&parts.iter().collect::<Vec<_>>(), 0)?;
                layer.q_norm = layer.q_norm.narrow0(0, real)?;
                layer.k_norm = layer.k_norm.narrow0(0, real)?;
                layer.proj = k::split(&layer.proj, 1, &[real, padded - real])?.swap_remove(0);
            }
        }
        let heads = if sliced {
            config.num_heads
        } else {
            config.num_heads + config.num_dummy_heads
        };
        let mut vit = InternVit {
            config: config.clone(),
            heads,
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
            *t = t.to_device(device)?;
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
        self.heads == self.config.num_heads
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
        let width = self.heads * d;
        let real = self.config.num_heads * d;

        let h = k::rms_norm(x, &l.norm1, eps)?;
        let qkv = k::matmul(&h, &l.qkv, None)?;
        let parts = k::split(&qkv, 2, &[width, width, width])?;
        // QK-norm over all heads concatenated; the mean square covers the real channels only.
        let q = k::rms_norm_partial_stats(&parts[0], &l.q_norm, eps, real)?;
        let key = k::rms_norm_partial_stats(&parts[1], &l.k_norm, eps, real)?;
        let shape = [tiles, n, self.heads, d];
        let attn = k::attention(
            &q.reshape(&shape)?,
            &key.reshape(&shape)?,
            &parts[2].reshape(&shape)?,
            AttentionMask::Bidirectional,
            1.0 / (d as f32).sqrt(),
        )?;
        let o = k::matmul(&attn.reshape(&[tiles, n, width])?, &l.proj, Some(&l.proj_bias))?;
        let x = k::add(x, &k::scale_channels(&o, &l.ls1)?)?;

        let h = k::rms_norm(&x, &l.norm2, eps)?;
        let m = k::gelu(&k::matmul(&h, &l.fc1, Some(&l.fc1_bias))?)?;
        let m = k::matmul(&m, &l.fc2, Some(&l.fc2_bias))?;
        debug_assert_eq!(m.shape(), [tiles, n, c]);
        Ok(k::add(&x, &k::scale_channels(&m, &l.ls2)?)?)
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
    /// Loads the tower for an LLM of width `llm_hidden` with projector width `projector_hidden`.
    pub fn load(
        weights: &dyn Weights,
        config: &VisionConfig,
        projector_hidden: usize,
        llm_hidden: usize,
        device: Device,
        dtype: DType,
    ) -> Result<VisionTower> {
        Ok(VisionTower {
            vit: InternVit::load(weights, config, device, dtype)?,
            projector: Projector::load(
                weights,
                4 * config.hidden_size,
                projector_hidden,
                llm_hidden,
                config.projector_eps,
                device,
            )?,
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
