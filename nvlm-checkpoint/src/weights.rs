//! A Megatron checkpoint seen through the HF release's names, as `nvlm_tensor::Weights`: a model loads straight from
//! `torch_dist` or zarr without converting to disk. Each tensor is converted on first access and kept.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use nvlm_tensor::{TensorError, TensorView, Weights};

use crate::convert::SourceReader;
use crate::megatron::MegatronCheckpoint;
use crate::nvlm_layout::{NvlmDims, OutputTensor};
use crate::torch_save::HostTensor;
use crate::Result;

/// HF-named tensors of a Megatron NVLM-D checkpoint.
pub struct MegatronWeights {
    checkpoint: MegatronCheckpoint,
    dims: NvlmDims,
    outputs: BTreeMap<String, (OutputTensor, OnceLock<std::result::Result<HostTensor, String>>)>,
}

impl MegatronWeights {
    /// Plans the HF view of `checkpoint` (nothing is read yet).
    pub fn new(checkpoint: MegatronCheckpoint, dims: NvlmDims) -> Result<MegatronWeights> {
        let plan = dims.plan(&checkpoint.tensors())?;
        let outputs = plan
            .outputs
            .into_iter()
            .map(|o| (o.name.clone(), (o, OnceLock::new())))
            .collect();
        Ok(MegatronWeights {
            checkpoint,
            dims,
            outputs,
        })
    }
}

impl Weights for MegatronWeights {
    fn get(&self, name: &str) -> nvlm_tensor::Result<TensorView<'_>> {
        let (out, cell) = self
            .outputs
            .get(name)
            .ok_or_else(|| TensorError::MissingWeight(name.to_string()))?;
        let tensor = cell
            .get_or_init(|| {
                SourceReader::new(&self.checkpoint, self.dims)
                    .produce(out)
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| TensorError::Unsupported(format!("reading `{name}`: {e}")))?;
        let dtype = tensor.dtype.engine().ok_or_else(|| {
            TensorError::Unsupported(format!(
                "`{name}` is {}, which the engine does not load",
                tensor.dtype
            ))
        })?;
        Ok(TensorView {
            dtype,
            shape: tensor.shape.iter().map(|&d| d as usize).collect(),
            data: &tensor.data,
        })
    }

    fn names(&self) -> Vec<String> {
        self.outputs.keys().cloned().collect()
    }
}
