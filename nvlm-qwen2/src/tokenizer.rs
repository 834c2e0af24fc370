//! The model's `tokenizer.json` through the `tokenizers` crate: byte-level BPE, no special tokens added (NVLM-D has no
//! BOS), added tokens such as `<|im_end|>` and `<|vision_pad|>` matched as single ids.

use std::path::Path;

use crate::{Qwen2Error, Result};

/// A loaded tokenizer.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: String,
}

impl Tokenizer {
    /// Loads `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Tokenizer> {
        let shown = path.display().to_string();
        if !path.is_file() {
            return Err(Qwen2Error::Tokenizer {
                path: shown,
                detail: "file not found".into(),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| Qwen2Error::Tokenizer {
            path: shown.clone(),
            detail: e.to_string(),
        })?;
        Ok(Tokenizer { inner, path: shown })
    }

    /// Loads a `tokenizer.json` held in memory; `name` is used in messages.
    pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Tokenizer> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| Qwen2Error::Tokenizer {
            path: name.to_string(),
            detail: e.to_string(),
        })?;
        Ok(Tokenizer {
            inner,
            path: name.to_string(),
        })
    }

    /// Token ids of `text`, with no special tokens added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.inner.encode(text, false).map_err(|e| self.error(e))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids`; special tokens are kept when `keep_special`.
    pub fn decode(&self, ids: &[u32], keep_special: bool) -> Result<String> {
        self.inner.decode(ids, !keep_special).map_err(|e| self.error(e))
    }

    /// The id of a token string, e.g. `<|im_end|>`.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    fn error(&self, e: impl std::fmt::Display) -> Qwen2Error {
        Qwen2Error::Tokenizer {
            path: self.path.clone(),
            detail: e.to_string(),
        }
    }
}
