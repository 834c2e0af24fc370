"""A small NVLM-D in PyTorch, written from the spec (`../shared/spec/nvlm-d.md` sections 4-8), with the HF
parameter names: InternViT (RMSNorm, QK-RMSNorm over all heads, LayerScale), pixel shuffle v2, the `mlp1`
projector, and Qwen2 (GQA, RoPE, SwiGLU, q/k/v biases). The 7 dummy ViT heads of the HF layout hold zeros and
contribute nothing, so they are added only when the weights are written (`hf_state_dict`)."""

import torch
import torch.nn.functional as F
from torch import nn

DUMMY_HEADS = 7


class RMSNorm(nn.Module):
    def __init__(self, width, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


class VitAttention(nn.Module):
    def __init__(self, width, heads, eps):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.q_norm = RMSNorm(width, eps)  # over all heads at once, as InternViT does
        self.k_norm = RMSNorm(width, eps)
        self.proj = nn.Linear(width, width)

    def forward(self, x):
        t, n, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=-1)
        q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (z.view(t, n, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        o = F.scaled_dot_product_attention(q, k, v)
        return self.proj(o.transpose(1, 2).reshape(t, n, c))


class VitLayer(nn.Module):
    def __init__(self, width, heads, ffn, eps):
        super().__init__()
        self.norm1 = RMSNorm(width, eps)
        self.attn = VitAttention(width, heads, eps)
        self.ls1 = nn.Parameter(torch.full((width,), 0.5))
        self.norm2 = RMSNorm(width, eps)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(width, ffn)
        self.mlp.fc2 = nn.Linear(ffn, width)
        self.ls2 = nn.Parameter(torch.full((width,), 0.5))

    def forward(self, x):
        x = x + self.attn(self.norm1(x)) * self.ls1
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x)))) * self.ls2


class InternVit(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        c, p = cfg["hidden_size"], cfg["patch_size"]
        self.grid = cfg["image_size"] // p
        self.embeddings = nn.Module()
        self.embeddings.class_embedding = nn.Parameter(torch.randn(1, 1, c) * 0.02)
        self.embeddings.patch_embedding = nn.Conv2d(3, c, kernel_size=p, stride=p)
        self.embeddings.position_embedding = nn.Parameter(torch.randn(1, self.grid**2 + 1, c) * 0.02)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(
            VitLayer(c, cfg["num_attention_heads"], cfg["intermediate_size"], cfg["layer_norm_eps"])
            for _ in range(cfg["num_hidden_layers"])
        )

    def forward(self, pixels):
        e = self.embeddings
        x = e.patch_embedding(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([e.class_embedding.expand(x.shape[0], -1, -1), x], dim=1) + e.position_embedding
        for layer in self.encoder.layers:
            x = layer(x)
        return x[:, 1:, :]


def pixel_shuffle_v2(x, scale=0.5):
    """HF `NVLM_D_Model.pixel_shuffle` with ps_version v2, [T, g, g, C] -> [T, g/2, g/2, 4C]."""
    n, w, h, c = x.shape
    x = x.reshape(n, w, int(h * scale), int(c / scale)).permute(0, 2, 1, 3).contiguous()
    x = x.view(n, int(h * scale), int(w * scale), int(c / (scale * scale)))
    return x.permute(0, 2, 1, 3).contiguous()


class Rope:
    def __init__(self, head_dim, theta):
        self.inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))

    def cos_sin(self, length):
        freqs = torch.outer(torch.arange(length, dtype=torch.float32), self.inv_freq)
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos(), emb.sin()


def rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


class Qwen2Attention(nn.Module):
    def __init__(self, h, heads, kv):
        super().__init__()
        self.heads, self.kv, self.d = heads, kv, h // heads
        self.q_proj = nn.Linear(h, heads * self.d)
        self.k_proj = nn.Linear(h, kv * self.d)
        self.v_proj = nn.Linear(h, kv * self.d)
        self.o_proj = nn.Linear(heads * self.d, h, bias=False)

    def forward(self, x, cos, sin, probe=None):
        """With `probe` = (rows, positions) (LongTensors [m]), also returns the attention probabilities of the
        queries at (rows[i], positions[i]): [m, heads, n] (training's attention supervision)."""
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.heads, self.d).transpose(1, 2)
        k = self.k_proj(x).view(b, n, self.kv, self.d).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.kv, self.d).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        groups = self.heads // self.kv
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        out = self.o_proj(o.transpose(1, 2).reshape(b, n, self.heads * self.d))
        if probe is None:
            return out
        rows, positions = probe
        scores = torch.einsum("mhd,mhnd->mhn", q[rows, :, positions], k[rows]) / self.d**0.5
        future = torch.arange(n) > positions[:, None, None]
        return out, scores.masked_fill(future, float("-inf")).softmax(-1)


class Qwen2Layer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h, eps = cfg["hidden_size"], cfg["rms_norm_eps"]
        self.input_layernorm = RMSNorm(h, eps)
        self.self_attn = Qwen2Attention(h, cfg["num_attention_heads"], cfg["num_key_value_heads"])
        self.post_attention_layernorm = RMSNorm(h, eps)
        self.mlp = nn.Module()
        f = cfg["intermediate_size"]
        self.mlp.gate_proj = nn.Linear(h, f, bias=False)
        self.mlp.up_proj = nn.Linear(h, f, bias=False)
        self.mlp.down_proj = nn.Linear(f, h, bias=False)

    def forward(self, x, cos, sin, probe=None):
        attn = self.self_attn(self.input_layernorm(x), cos, sin, probe)
        attn, probs = attn if probe is not None else (attn, None)
        x = x + attn
        h = self.post_attention_layernorm(x)
        x = x + self.mlp.down_proj(F.silu(self.mlp.gate_proj(h)) * self.mlp.up_proj(h))
        return x if probe is None else (x, probs)


class Qwen2(nn.Module):
    """Qwen2ForCausalLM with tied embeddings (the `lm_head` is `embed_tokens`)."""

    def __init__(self, cfg):
        super().__init__()
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        nn.init.normal_(self.model.embed_tokens.weight, std=0.02)
        self.model.layers = nn.ModuleList(Qwen2Layer(cfg) for _ in range(cfg["num_hidden_layers"]))
        self.model.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        self.rope = Rope(cfg["hidden_size"] // cfg["num_attention_heads"], cfg["rope_theta"])

    def hidden(self, embeds, probe=None):
        """Final-norm hidden states; with `probe` = (layer, rows, positions) also the attention probabilities of
        those queries in that layer ([m, heads, n], see `Qwen2Attention.forward`)."""
        cos, sin = self.rope.cos_sin(embeds.shape[1])
        x, probs = embeds, None
        for i, layer in enumerate(self.model.layers):
            if probe is not None and i == probe[0]:
                x, probs = layer(x, cos, sin, probe[1:])
            else:
                x = layer(x, cos, sin)
        return self.model.norm(x) if probe is None else (self.model.norm(x), probs)

    def logits(self, hidden):
        return hidden @ self.model.embed_tokens.weight.T


class NvlmD(nn.Module):
    """NVLM-D. `aux_classes` (class counts) adds one training-only head per entry that classifies each image token
    from a label map: from the pixel-shuffled ViT output, or with `aux_on_embeddings` from the projector's output
    (the image rows the LLM reads); they are not part of the model and are never written."""

    def __init__(self, config, aux_classes=(), aux_on_embeddings=False):
        super().__init__()
        self.config = config
        vc, lc = config["vision_config"], config["llm_config"]
        self.vision_model = InternVit(vc)
        width = 4 * vc["hidden_size"]
        self.mlp1 = nn.Sequential(
            nn.LayerNorm(width),
            nn.Linear(width, lc["intermediate_size"], bias=False),
            nn.GELU(),
            nn.Linear(lc["intermediate_size"], lc["hidden_size"], bias=False),
        )
        self.language_model = Qwen2(lc)
        self.image_context_id = 151654
        self.aux_on_embeddings = aux_on_embeddings
        aux_width = lc["hidden_size"] if aux_on_embeddings else width
        self.aux_heads = nn.ModuleList(nn.Linear(aux_width, n) for n in aux_classes)

    def image_features(self, pixels):
        """[T, 3, S, S] -> pixel-shuffled ViT output [T, tokens_per_tile, 4C]."""
        x = self.vision_model(pixels)
        g = self.vision_model.grid
        x = pixel_shuffle_v2(x.reshape(x.shape[0], g, g, -1))
        return x.reshape(x.shape[0], -1, x.shape[-1])

    def image_rows(self, pixels, features=None):
        """[T, 3, S, S] -> [T * tokens_per_tile, H], tile-major."""
        x = self.mlp1(self.image_features(pixels) if features is None else features)
        return x.reshape(-1, x.shape[-1])

    def embeds(self, ids, pixels, features=None):
        e = self.language_model.model.embed_tokens(ids)
        if pixels is not None and pixels.shape[0]:
            mask = ids == self.image_context_id
            e = e.masked_scatter(mask.unsqueeze(-1), self.image_rows(pixels, features).to(e.dtype))
        return e


def hf_state_dict(model, vision_heads):
    """The HF NVLM-D tensors: ViT attention padded with 7 zero dummy heads, no `lm_head` (tied)."""
    out = {}
    for name, t in model.state_dict().items():
        if name.startswith("aux_heads."):
            continue
        t = t.detach().clone()
        if ".attn.qkv.weight" in name:
            c = t.shape[1]
            pad = torch.zeros(DUMMY_HEADS * c // vision_heads, c)
            t = torch.cat([torch.cat([part, pad]) for part in t.split(c)])
        elif ".attn.q_norm.weight" in name or ".attn.k_norm.weight" in name:
            t = torch.cat([t, torch.zeros(DUMMY_HEADS * t.shape[0] // vision_heads)])
        elif ".attn.proj.weight" in name:
            t = torch.cat([t, torch.zeros(t.shape[0], DUMMY_HEADS * t.shape[1] // vision_heads)], dim=1)
        out[name] = t.to(torch.bfloat16).contiguous()
    return out


def round_to_bf16_(model):
    """Rounds every parameter to bf16 in place (what the saved model holds), keeping f32 storage."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))


@torch.no_grad()
def greedy(model, ids, pixels, max_new_tokens, eos):
    """Greedy decoding by full recompute; returns the new ids (eos included when emitted)."""
    rows = model.image_rows(pixels) if pixels is not None else None
    ids = list(ids)
    new = []
    for _ in range(max_new_tokens):
        t = torch.tensor([ids])
        e = model.language_model.model.embed_tokens(t)
        if rows is not None:
            e = e.masked_scatter((t == model.image_context_id).unsqueeze(-1), rows)
        h = model.language_model.hidden(e)[:, -1]
        token = int(model.language_model.logits(h).argmax(-1))
        new.append(token)
        ids.append(token)
        if token == eos:
            break
    return new


def parameter_count(model):
    return sum(p.numel() for p in model.parameters())

