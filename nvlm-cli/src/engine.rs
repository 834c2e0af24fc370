//! NVLM-D end to end: load (an HF folder, a Megatron checkpoint, or the embedded demo), images to tiles to image
//! embeddings, the prompt to ids, the splice, and generation.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use nvlm_checkpoint::{MegatronCheckpoint, MegatronWeights, SafetensorsCheckpoint, SAFETENSORS_INDEX};
use nvlm_dist::{Comm, NcclComm, ThreadGroup};
use nvlm_qwen2::{
    build_prompt, generate, GenerateOptions, Generation, Qwen2Config, Qwen2Model, Sampler, SamplerConfig,
    SystemPrompt, Tokenizer,
};
use nvlm_tensor::{CudaDevice, DType, Device, Tensor, Weights};
use nvlm_tiling::prompt::expand_images;
use nvlm_tiling::{load_tiles, pixel_values, pixel_values_bf16, TilingConfig, TILE_SIZE};
use nvlm_vit::{VisionConfig, VisionTower};

use crate::demo_model;
use crate::launched::{self, Inputs};
use crate::load_progress::ProgressWeights;

/// A loaded NVLM-D.
pub struct Engine {
    /// The vision tower, one shard per tensor-parallel rank (rank 0 first; one entry without parallelism).
    vision: Vec<VisionTower>,
    /// The language model, one shard per tensor-parallel rank (rank 0 first; one entry without parallelism).
    llm: Vec<Qwen2Model>,
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// How images are tiled.
    pub tiling: TilingConfig,
    /// True for the embedded demo model.
    pub demo: bool,
    /// Image tokens per tile (`<|vision_pad|>` ids in the prompt): 256 for NVLM-D-72B.
    pub tokens_per_tile: usize,
    dtype: DType,
    /// The group of processes in a multi-process (torchrun/Slurm) launch, of which this process is one rank.
    group: Option<Arc<dyn Comm>>,
}

/// Where the model comes from.
pub struct ModelSource {
    /// An HF NVLM-D folder or a Megatron checkpoint; `None` for the embedded demo.
    pub model: Option<PathBuf>,
    /// `tokenizer.json`; default: the model folder's, or the embedded one for the demo.
    pub tokenizer: Option<PathBuf>,
    /// `config.json` for a Megatron checkpoint (default: the checkpoint folder's).
    pub config: Option<PathBuf>,
    /// Tensor-parallel ranks for the language model (1: none). On the CPU the ranks are threads of this process.
    pub tensor_parallel: usize,
}

fn read_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

impl Engine {
    /// The device the model runs on.
    pub fn device(&self) -> Device {
        self.llm[0].device()
    }

    /// Loads the model on `device` (the CPU backend computes in f32, a GPU in bf16).
    pub fn load(source: &ModelSource, device: Device) -> anyhow::Result<Engine> {
        let launch = launched::launch_env()?;
        let device = match &launch {
            Some(launch) => launched::device_of(launch, device, source.tensor_parallel)?,
            None => device,
        };
        let (config, weights, tokenizer, demo): (serde_json::Value, Box<dyn Weights>, Tokenizer, bool) =
            match &source.model {
                None => (
                    demo_model::config(),
                    Box::new(demo_model::weights()?),
                    Tokenizer::from_bytes(demo_model::TOKENIZER_JSON, "embedded tokenizer.json")?,
                    true,
                ),
                Some(dir) => {
                    if !dir.exists() {
                        bail!("model folder {} does not exist", dir.display());
                    }
                    let hf = dir.join(SAFETENSORS_INDEX).is_file() || dir.join("model.safetensors").is_file();
                    let config_path = source.config.clone().unwrap_or_else(|| dir.join("config.json"));
                    let config = read_json(&config_path)
                        .with_context(|| "an NVLM-D model folder needs its config.json (or pass --config)")?;
                    if config["architectures"].get(0).and_then(|a| a.as_str()) != Some("NVLM_D")
                        && config["model_type"] != "NVLM_D"
                    {
                        bail!(
                            "{} does not describe an NVLM-D model (architectures: {})",
                            config_path.display(),
                            config["architectures"]
                        );
                    }
                    let weights: Box<dyn Weights> = if hf {
                        Box::new(SafetensorsCheckpoint::open(dir)?)
                    } else {
                        let checkpoint = MegatronCheckpoint::open(dir).with_context(|| {
                            format!(
                                "{} holds neither HF safetensors nor a Megatron checkpoint",
                                dir.display()
                            )
                        })?;
                        let dims = nvlm_checkpoint::nvlm_layout::NvlmDims::from_hf_config(&config)?;
                        Box::new(MegatronWeights::new(checkpoint, dims)?)
                    };
                    let tokenizer_path = source
                        .tokenizer
                        .clone()
                        .unwrap_or_else(|| dir.join("tokenizer.json"));
                    let tokenizer = Tokenizer::from_file(&tokenizer_path)
                        .with_context(|| "the model folder has no tokenizer.json: pass --tokenizer FILE")?;
                    (config, weights, tokenizer, false)
                }
            };
        let tokenizer = match (&source.tokenizer, demo) {
            (Some(path), true) => Tokenizer::from_file(path)?,
            _ => tokenizer,
        };
        let llm_config = Qwen2Config::from_json(&config, true)?;
        let vision_config = VisionConfig::from_json(&config)?;
        let dtype = device.compute_dtype();
        let progress = ProgressWeights::new(
            weights.as_ref(),
            weights.names().len() * source.tensor_parallel.max(1),
        );
        let (loaded, group) = match &launch {
            // One process per GPU: this process loads its own shard of the group.
            Some(launch) => {
                let group = launched::process_group(launch)?;
                let shard = load_shard(
                    &progress,
                    &vision_config,
                    &llm_config,
                    device,
                    dtype,
                    group.clone(),
                );
                (shard.map(|(v, l)| (vec![v], vec![l])), Some(group))
            }
            None => (
                load_ranks(
                    &progress,
                    &vision_config,
                    &llm_config,
                    device,
                    dtype,
                    source.tensor_parallel,
                ),
                None,
            ),
        };
        progress.finish();
        let (vision, llm) = loaded?;
        let tiling = TilingConfig {
            max_tiles: config["max_dynamic_patch"].as_u64().unwrap_or(6) as usize,
            thumbnail: config["use_thumbnail"].as_bool().unwrap_or(true),
            ..TilingConfig::default()
        };
        Ok(Engine {
            vision,
            llm,
            tokenizer,
            tiling,
            demo,
            tokens_per_tile: vision_config.tokens_per_tile(),
            dtype,
            group,
        })
    }

    /// False on the ranks other than 0 of a multi-process launch, which neither read inputs nor print.
    pub fn is_lead(&self) -> bool {
        self.group.as_ref().is_none_or(|g| g.rank() == 0)
    }

    /// The inputs every process of a multi-process launch uses: rank 0's (`prepared` there), broadcast; a single
    /// process gets `prepared` back.
    pub fn share_inputs(&self, prepared: anyhow::Result<Inputs>) -> anyhow::Result<Inputs> {
        match &self.group {
            Some(group) => launched::share_inputs(group.as_ref(), prepared),
            None => prepared,
        }
    }

    /// The prompt text of a conversation: the chat template over `history` and `question`, each `<image>`
    /// placeholder expanded for its image's tile count (`tile_counts`, in order) with this model's image tokens per
    /// tile. Callers put the placeholder in (`with_image_placeholder` for a first question).
    pub fn chat_prompt(
        &self,
        system: &SystemPrompt,
        history: &[(String, String)],
        question: &str,
        tile_counts: &[usize],
    ) -> String {
        expand_images(
            &build_prompt(system, history, question),
            tile_counts,
            self.tokens_per_tile,
        )
    }

    /// Tiles of one image file (`[N, 448, 448, 3]` u8) and the tile count.
    pub fn tile(&self, image: &Path) -> anyhow::Result<(Vec<u8>, usize)> {
        let tiles =
            load_tiles(image, &self.tiling).with_context(|| format!("preprocessing {}", image.display()))?;
        Ok((tiles.pixels.clone(), tiles.len()))
    }

    /// Image embedding rows `[tokens_per_tile * tiles, H]` for all images' tiles (`[N, 448, 448, 3]` u8, concatenated).
    pub fn image_rows(&self, tiles: &[u8]) -> anyhow::Result<Option<Tensor>> {
        let per_tile = TILE_SIZE * TILE_SIZE * 3;
        if tiles.is_empty() {
            return Ok(None);
        }
        if !tiles.len().is_multiple_of(per_tile) {
            bail!("tile data is not a whole number of 448x448x3 tiles");
        }
        let n = tiles.len() / per_tile;
        let pixels = pixel_tensor(tiles, self.dtype, self.device())?;
        // Every rank runs its share of the tower (on its own GPU); rank 0's (identical) embeddings are returned.
        let out = std::thread::scope(|scope| {
            let others: Vec<_> = self.vision[1..]
                .iter()
                .map(|tower| {
                    let pixels = &pixels;
                    scope.spawn(move || tower.forward(&pixels.to_device(tower.device())?))
                })
                .collect();
            let lead = self.vision[0].forward(&pixels)?;
            for rank in others {
                rank.join()
                    .map_err(|_| anyhow::anyhow!("a tensor-parallel rank panicked"))??;
            }
            anyhow::Ok(lead)
        })?;
        let hidden = out.embeddings.shape()[2];
        Ok(Some(out.embeddings.reshape(&[n * self.tokens_per_tile, hidden])?))
    }

    /// Generates from prompt ids and image rows.
    pub fn generate(
        &self,
        ids: &[u32],
        image_rows: Option<&Tensor>,
        sampler: SamplerConfig,
        max_new_tokens: usize,
        record: bool,
        on_token: impl FnMut(u32) -> std::ops::ControlFlow<()>,
    ) -> anyhow::Result<Generation> {
        let max_positions = self.context_length();
        if ids.len() + max_new_tokens > max_positions {
            bail!("the prompt has {} tokens; with {max_new_tokens} new tokens that exceeds the context of {max_positions}", ids.len());
        }
        let options = GenerateOptions {
            max_new_tokens,
            stop_ids: self.stop_ids(),
            record,
        };
        let run_rank = |llm: &Qwen2Model, on_token: &mut dyn FnMut(u32) -> std::ops::ControlFlow<()>| {
            let rows = image_rows.map(|r| r.to_device(llm.device())).transpose()?;
            let embeds = llm.embed_multimodal(ids, rows.as_ref(), self.dtype)?;
            let mut sampler = Sampler::new(sampler.clone());
            anyhow::Ok(generate(llm, &embeds, ids, &mut sampler, &options, on_token)?)
        };
        let mut on_token = on_token;
        // Every rank runs the same generation; rank 0 (this thread) streams and decides when to stop.
        std::thread::scope(|scope| {
            let others: Vec<_> = self.llm[1..]
                .iter()
                .map(|llm| scope.spawn(move || run_rank(llm, &mut |_| std::ops::ControlFlow::Continue(()))))
                .collect();
            let lead = run_rank(&self.llm[0], &mut on_token);
            for rank in others {
                rank.join()
                    .map_err(|_| anyhow::anyhow!("a tensor-parallel rank panicked"))??;
            }
            lead
        })
    }

    /// The most positions (prompt + answer) one sequence may use.
    pub fn context_length(&self) -> usize {
        32768 * 3
    }

    /// The language model when it runs whole in this thread (no tensor parallelism): what batched serving drives.
    pub fn language_model(&self) -> Option<&Qwen2Model> {
        match self.llm.as_slice() {
            [whole] => Some(whole),
            _ => None,
        }
    }

    /// Prompt embeddings with the image rows spliced in, in the engine's compute dtype.
    pub fn prompt_embeddings(&self, ids: &[u32], image_rows: Option<&Tensor>) -> anyhow::Result<Tensor> {
        Ok(self.llm[0].embed_multimodal(ids, image_rows, self.dtype)?)
    }

    /// Token ids that end an answer: the config's end-of-sequence ids and `<|im_end|>`.
    pub fn stop_ids(&self) -> Vec<u32> {
        let mut ids = self.llm[0].config.eos_token_ids.clone();
        if let Some(im_end) = self.tokenizer.token_id("<|im_end|>") {
            ids.push(im_end);
        }
        ids
    }

    /// The answer text of generated ids: special tokens skipped, cut at `<|im_end|>`, trimmed.
    pub fn answer(&self, tokens: &[u32]) -> anyhow::Result<String> {
        let text = self.tokenizer.decode(tokens, false)?;
        Ok(text
            .split("<|im_end|>")
            .next()
            .unwrap_or_default()
            .trim()
            .to_string())
    }
}

/// Normalised pixel values `[N, 3, 448, 448]` of whole tiles (`[N, 448, 448, 3]` u8) in `dtype` (bf16 converted
/// on the host, as the GPU takes it) on `device`.
pub fn pixel_tensor(tiles: &[u8], dtype: DType, device: Device) -> anyhow::Result<Tensor> {
    let shape = [tiles.len() / (TILE_SIZE * TILE_SIZE * 3), 3, TILE_SIZE, TILE_SIZE];
    let pixels = match dtype {
        DType::BF16 => Tensor::from_vec(pixel_values_bf16(tiles, TILE_SIZE), &shape)?,
        _ => Tensor::from_vec(pixel_values(tiles, TILE_SIZE), &shape)?,
    };
    Ok(pixels.to_device(device)?)
}

/// The vision tower and the language model, whole or as `tensor_parallel` shards over one in-process group.
fn load_ranks(
    weights: &dyn Weights,
    vision: &VisionConfig,
    llm: &Qwen2Config,
    device: Device,
    dtype: DType,
    tensor_parallel: usize,
) -> anyhow::Result<(Vec<VisionTower>, Vec<Qwen2Model>)> {
    const PREFIX: &str = "language_model.";
    let (ffn, hidden) = (llm.intermediate_size, llm.hidden_size);
    match tensor_parallel {
        0 => bail!("--tp must be at least 1"),
        1 => Ok((
            vec![VisionTower::load(weights, vision, ffn, hidden, device, dtype)?],
            vec![Qwen2Model::load(weights, PREFIX, llm, device)?],
        )),
        n => {
            let mut ranks = (Vec::with_capacity(n), Vec::with_capacity(n));
            for (device, comm) in rank_group(device, n)? {
                let (tower, model) = load_shard(weights, vision, llm, device, dtype, comm)
                    .with_context(|| format!("splitting the model over --tp {n}"))?;
                ranks.0.push(tower);
                ranks.1.push(model);
            }
            Ok(ranks)
        }
    }
}

/// One rank's shard of the vision tower and the language model, on `device`, in `comm`'s group.
fn load_shard(
    weights: &dyn Weights,
    vision: &VisionConfig,
    llm: &Qwen2Config,
    device: Device,
    dtype: DType,
    comm: Arc<dyn Comm>,
) -> anyhow::Result<(VisionTower, Qwen2Model)> {
    let (ffn, hidden) = (llm.intermediate_size, llm.hidden_size);
    let context = || format!("loading rank {} of {}", comm.rank(), comm.size());
    let tower = VisionTower::load_shard(weights, vision, ffn, hidden, device, dtype, comm.clone())
        .with_context(context)?;
    let model = Qwen2Model::load_shard(weights, "language_model.", llm, device, comm.clone())
        .with_context(context)?;
    Ok((tower, model))
}

/// The devices and communicators of `n` tensor-parallel ranks driven by this process: an in-process thread group on
/// the CPU; on GPUs, NCCL over `cuda:k .. cuda:k+n-1` for `--device cuda:k` (one driving thread per GPU).
fn rank_group(device: Device, n: usize) -> anyhow::Result<Vec<(Device, Arc<dyn Comm>)>> {
    match device {
        Device::Cpu => Ok(ThreadGroup::new(n)
            .into_iter()
            .map(|comm| (Device::Cpu, Arc::new(comm) as Arc<dyn Comm>))
            .collect()),
        Device::Cuda(first) => {
            let count = nvlm_tensor::cuda_device_count()?;
            if first + n > count {
                bail!(
                    "--tp {n} on {device} needs GPUs cuda:{first}..cuda:{}, but this machine has {count}; lower --tp \
                     or pick another first GPU",
                    first + n - 1
                );
            }
            let devices = (first..first + n)
                .map(CudaDevice::get)
                .collect::<Result<Vec<_>, _>>()?;
            let comms = NcclComm::group(&devices).context("creating the NCCL group for --tp")?;
            Ok(comms
                .into_iter()
                .zip(first..)
                .map(|(comm, ordinal)| (Device::Cuda(ordinal), Arc::new(comm) as Arc<dyn Comm>))
                .collect())
        }
    }
}

/// Milliseconds since `start`.
pub fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}
