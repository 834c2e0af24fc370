//! The HF reference run of the tiny NVLM-D fixture (`model/reference/activations.safetensors`): prompt and generated
//! ids, input tiles and activations, for the tests that run the model.

use std::path::PathBuf;

use crate::{fixtures, scratch};

/// The reference activations, loaded once per test.
pub struct ReferenceActivations(safetensors::SafeTensors<'static>);

impl ReferenceActivations {
    /// Reads the fixture file (leaked: a test process reads it a few times at most).
    pub fn open() -> ReferenceActivations {
        let bytes = std::fs::read(fixtures().join("model/reference/activations.safetensors"))
            .expect("reading model/reference/activations.safetensors");
        let leaked: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        ReferenceActivations(safetensors::SafeTensors::deserialize(leaked).expect("parsing the activations"))
    }

    /// The raw bytes of tensor `name`.
    pub fn bytes(&self, name: &str) -> &'static [u8] {
        self.0
            .tensor(name)
            .unwrap_or_else(|e| panic!("reference tensor {name}: {e}"))
            .data()
    }

    /// The i64 ids of tensor `name`.
    pub fn ids(&self, name: &str) -> Vec<u64> {
        self.bytes(name)
            .chunks(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u64)
            .collect()
    }

    /// The ids of `name` written as a JSON list (what `nvlm generate --input-ids` reads) to `file` in `suite`'s
    /// scratch folder.
    pub fn ids_file(&self, name: &str, suite: &str, file: &str) -> PathBuf {
        let path = scratch(suite, file);
        std::fs::write(&path, serde_json::to_string(&self.ids(name)).unwrap()).unwrap();
        path
    }

    /// The values of float tensor `name` (stored as f32, or bf16 for the `bf16.*` run) as f32.
    pub fn f32s(&self, name: &str) -> Vec<f32> {
        let view = self
            .0
            .tensor(name)
            .unwrap_or_else(|e| panic!("reference tensor {name}: {e}"));
        match view.dtype() {
            safetensors::Dtype::F32 => view
                .data()
                .chunks(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            safetensors::Dtype::BF16 => view
                .data()
                .chunks(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect(),
            other => panic!("reference tensor {name} is {other:?}, not a float"),
        }
    }

    /// The reference's input tiles (`input.tiles_u8`, `[3, 448, 448, 3]` RGB) written as `nvlm preprocess --out`
    /// writes them, to `file` in `suite`'s scratch folder.
    pub fn tiles_file(&self, suite: &str, file: &str) -> PathBuf {
        let path = scratch(suite, file);
        let view = safetensors::tensor::TensorView::new(
            safetensors::Dtype::U8,
            vec![3, 448, 448, 3],
            self.bytes("input.tiles_u8"),
        )
        .unwrap();
        safetensors::tensor::serialize_to_file([("tiles", view)], None, &path).unwrap();
        path
    }
}
