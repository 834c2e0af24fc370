//! The benchmark's cases, in the order they run. PyTorch is timed on exactly these (`--list-cases`).

use std::sync::OnceLock;

use serde_json::{json, Value};

/// `--scale N`: every size divided by `N` (a rehearsal of the benchmark's code on a small or emulated device; the
/// figures mean nothing then). Set once, before the cases are made; 1 (the real sizes) when never set.
static SCALE: OnceLock<usize> = OnceLock::new();

/// Sets the scale (see [`SCALE`]); only the first call counts.
pub fn set_scale(scale: usize) {
    let _ = SCALE.set(scale.max(1));
}

fn scale() -> usize {
    *SCALE.get().unwrap_or(&1)
}

/// `n / scale`, rounded down to a multiple of `multiple` and at least `multiple`.
fn scaled(n: usize, multiple: usize) -> usize {
    ((n / scale()) / multiple * multiple).max(multiple)
}

/// NVLM-D-72B's LLM: hidden size, query heads, KV heads, head dim, MLP width. Scaled, the heads shrink (at least 8,
/// with 8 KV heads, so that every TP share still exists) at head dim 128, and the MLP width stays divisible by 8 x 8.
pub fn llm() -> (usize, usize, usize, usize, usize) {
    if scale() == 1 {
        return (8192, 64, 8, 128, 29568);
    }
    let heads = (64 / scale()).max(8);
    (heads * 128, heads, 8, 128, scaled(29568, 64))
}

/// InternViT-6B: hidden size, real heads, dummy heads (the HF layout pads 25 to 32), head dim, MLP width, tokens
/// per tile (1,024 patches and the class token, never scaled).
pub fn vit() -> (usize, usize, usize, usize, usize, usize) {
    if scale() == 1 {
        return (3200, 25, 7, 128, 12800, 1025);
    }
    let (heads, dummy) = ((25 / scale()).max(1), (7 / scale()).max(1));
    (heads * 128, heads, dummy, 128, scaled(12800, 64), 1025)
}

/// The image prompt the prefill and decode cases use: 7 tiles of 256 tokens and their text (1,852 tokens).
pub fn prompt() -> usize {
    scaled(1852, 4)
}

/// What a case measures.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Device-to-device copy of `bytes`: the measured bandwidth, the ceiling of every memory-bound case.
    Copy { bytes: usize },
    /// One LLM layer over a prompt of `tokens`: one rank's share at tensor parallelism `tp` (its heads and FFN rows,
    /// no communication).
    LlmPrefill { tokens: usize, tp: usize },
    /// One LLM decode step for `batch` sequences of `context` cached tokens each (one rank's share at `tp`).
    LlmDecode { batch: usize, context: usize, tp: usize },
    /// One InternViT layer on `tiles` tiles (and the tower with the projector, extrapolated).
    VitTiles { tiles: usize },
    /// Attention alone, `[batch, queries, heads, head_dim]` queries over `keys` keys with `kv_heads` KV heads.
    Attention {
        batch: usize,
        queries: usize,
        keys: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        causal: bool,
    },
    /// Decode attention alone: one query row for each of `batch` sequences of `context` cached positions in the
    /// paged cache, `heads` query heads over `kv_heads` KV heads (against the KV bytes' memory roofline).
    DecodeAttention {
        batch: usize,
        context: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
    },
}

/// One benchmark case: a stable name (the key that joins our figures with PyTorch's) and what it measures.
#[derive(Debug, Clone)]
pub struct Case {
    /// Stable name, e.g. `llm-decode-b8`.
    pub name: String,
    /// What it measures.
    pub kind: Kind,
}

impl Case {
    /// The case as one JSON object: `name`, `kind` and the kind's sizes (what `torch_layers.py` reads).
    pub fn to_json(&self) -> Value {
        let (hidden, _, _, head_dim, _) = llm();
        let (vit_hidden, vit_heads, vit_dummy, vit_head_dim, vit_ffn, vit_tokens) = vit();
        let llm = |tp: usize| {
            let (heads, kv_heads, ffn) = llm_share(tp);
            json!({"hidden": hidden, "heads": heads, "kv_heads": kv_heads, "head_dim": head_dim, "ffn": ffn,
                   "tp": tp})
        };
        match self.kind {
            Kind::Copy { bytes } => json!({"name": self.name, "kind": "copy", "bytes": bytes}),
            Kind::LlmPrefill { tokens, tp } => {
                json!({"name": self.name, "kind": "llm_prefill", "tokens": tokens, "model": llm(tp)})
            }
            Kind::LlmDecode { batch, context, tp } => json!({"name": self.name, "kind": "llm_decode",
                "batch": batch, "context": context, "model": llm(tp)}),
            Kind::VitTiles { tiles } => json!({"name": self.name, "kind": "vit_layer", "tiles": tiles,
                "model": {"hidden": vit_hidden, "heads": vit_heads, "dummy_heads": vit_dummy,
                          "head_dim": vit_head_dim, "ffn": vit_ffn, "tokens": vit_tokens}}),
            Kind::Attention {
                batch,
                queries,
                keys,
                heads,
                kv_heads,
                head_dim,
                causal,
            } => json!({
                "name": self.name, "kind": "attention", "batch": batch, "queries": queries, "keys": keys,
                "heads": heads, "kv_heads": kv_heads, "head_dim": head_dim, "causal": causal}),
            Kind::DecodeAttention {
                batch,
                context,
                heads,
                kv_heads,
                head_dim,
            } => json!({
                "name": self.name, "kind": "attention_decode", "batch": batch, "context": context,
                "heads": heads, "kv_heads": kv_heads, "head_dim": head_dim}),
        }
    }
}

/// One rank's query heads, KV heads (one, replicated, when there are fewer than ranks) and FFN rows at `tp`.
pub fn llm_share(tp: usize) -> (usize, usize, usize) {
    let (_, heads, kv_heads, _, ffn) = llm();
    (heads / tp, (kv_heads / tp).max(1), ffn / tp)
}

/// Every case, in running order (the LLM's layers are freed before the ViT's are made).
pub fn cases() -> Vec<Case> {
    let (_, heads, kv_heads, head_dim, _) = llm();
    let (_, vit_heads, _, vit_head_dim, _, vit_tokens) = vit();
    let mut out = vec![case(
        "copy-1gib",
        Kind::Copy {
            bytes: scaled(1 << 30, 1 << 20),
        },
    )];
    for tp in [1, 2, 4, 8] {
        let suffix = if tp == 1 {
            String::new()
        } else {
            format!("-tp{tp}-share")
        };
        let (tokens, context) = (prompt(), prompt());
        out.push(case(
            &format!("llm-layer-prefill-1852{suffix}"),
            Kind::LlmPrefill { tokens, tp },
        ));
        out.push(case(
            &format!("llm-layer-decode-b1{suffix}"),
            Kind::LlmDecode {
                batch: 1,
                context,
                tp,
            },
        ));
    }
    for batch in [8, 32] {
        out.push(case(
            &format!("llm-layer-decode-b{batch}"),
            Kind::LlmDecode {
                batch,
                context: prompt(),
                tp: 1,
            },
        ));
    }
    out.push(case(
        "attention-vit-7x1025-bidirectional",
        Kind::Attention {
            batch: scaled(7, 1),
            queries: vit_tokens,
            keys: vit_tokens,
            heads: vit_heads,
            kv_heads: vit_heads,
            head_dim: vit_head_dim,
            causal: false,
        },
    ));
    for (label, tokens) in [("2k", 2048), ("8k", 8192), ("32k", 32768)] {
        out.push(case(
            &format!("attention-llm-causal-{label}"),
            Kind::Attention {
                batch: 1,
                queries: scaled(tokens, 32),
                keys: scaled(tokens, 32),
                heads,
                kv_heads,
                head_dim,
                causal: true,
            },
        ));
    }
    for (label, batch, context) in [("2k-b1", 1, 2048), ("32k-b1", 1, 32768), ("8k-b8", 8, 8192)] {
        out.push(case(
            &format!("attention-llm-decode-{label}"),
            Kind::DecodeAttention {
                batch,
                context: scaled(context, 32),
                heads,
                kv_heads,
                head_dim,
            },
        ));
    }
    out.push(case("vit-layer-7-tiles", Kind::VitTiles { tiles: scaled(7, 1) }));
    out
}

fn case(name: &str, kind: Kind) -> Case {
    Case {
        name: name.to_string(),
        kind,
    }
}
