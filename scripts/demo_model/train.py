"""Trains the embedded demo NVLM-D on the synthetic shapes task and writes it in the HF NVLM-D layout.

    python3 scripts/demo_model/train.py            # about 45 minutes on 2 CPU cores
    python3 scripts/demo_model/train.py --steps 20 --out /tmp/demo   # a quick smoke run

Writes `assets/demo-model/` (config.json, model.safetensors in bf16, training-log.jsonl) and the held-out test set
`assets/demo-task/test/` (PNG images and test.jsonl with each item's prompt-id digest and this model's greedy answer,
which the Rust engine must reproduce), and the README's example picture `assets/shapes.png`. Same seed, same thread count: same weights.
"""

import argparse
import hashlib
import json
import math
import os
import random
import sys
import time
from pathlib import Path

# Threads that wait for work sleep instead of spinning: the batch-building worker process then gets its core.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import nvlm_torch  # noqa: E402
import preprocess  # noqa: E402
import task  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER = ROOT / "nvlm-cli" / "assets" / "tokenizer.json"

VISION = dict(hidden_size=64, num_attention_heads=4, num_hidden_layers=3, intermediate_size=256, patch_size=28)


def train_kinds(which_side_weight, colour_weight):
    """The question mix of training: the test set's, with the two questions that pick one shape among several ("which
    shape is on the left/right?", "what colour is the square?"), the slowest kinds to learn, asked more often."""
    weight = {"which_side": which_side_weight, "what_colour": colour_weight}
    return [(k, weight.get(k, 1) * w) for k, w in task.KINDS]

LLM = dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=4, intermediate_size=192)


def nvlm_config(llm_layers=LLM["num_hidden_layers"]):
    """The HF NVLM-D config.json structure (as the real release) with the demo's sizes (`llm_layers` Qwen2 layers)."""
    return {
        "architectures": ["NVLM_D"],
        "auto_map": {
            "AutoConfig": "configuration_nvlm_d.NVLM_D_Config",
            "AutoModel": "modeling_nvlm_d.NVLM_D_Model",
            "AutoModelForCausalLM": "modeling_nvlm_d.NVLM_D_Model",
        },
        "downsample_ratio": 0.5,
        "dynamic_image_size": True,
        "force_image_size": 448,
        "max_dynamic_patch": 6,
        "min_dynamic_patch": 1,
        "model_type": "NVLM_D",
        "ps_version": "v2",
        "select_layer": -1,
        "template": "chatml",
        "torch_dtype": "bfloat16",
        "use_backbone_lora": 0,
        "use_llm_lora": 0,
        "use_thumbnail": True,
        "llm_config": {
            "_name_or_path": "nvlm-rs/demo-shapes",
            "architectures": ["Qwen2ForCausalLM"],
            "attention_bias": True,
            "attention_dropout": 0.0,
            "bos_token_id": 151643,
            "eos_token_id": 151645,
            "hidden_act": "silu",
            "initializer_range": 0.02,
            "max_position_embeddings": 32768,
            "model_type": "qwen2",
            "rms_norm_eps": 1e-06,
            "rope_scaling": {"factor": 3.0, "type": "dynamic"},
            "rope_theta": 1000000.0,
            "tie_word_embeddings": True,
            "torch_dtype": "bfloat16",
            "use_cache": True,
            "vocab_size": 152064,
            **LLM,
            "num_hidden_layers": llm_layers,
        },
        "vision_config": {
            "architectures": ["InternVisionModel"],
            "attention_dropout": 0.0,
            "drop_path_rate": 0.0,
            "dropout": 0.0,
            "hidden_act": "gelu",
            "image_size": 448,
            "layer_norm_eps": 1e-06,
            "model_type": "intern_vit_6b",
            "norm_type": "rms_norm",
            "num_channels": 3,
            "qk_normalization": True,
            "qkv_bias": False,
            "torch_dtype": "bfloat16",
            "use_flash_attn": False,
            **VISION,
        },
    }


class Encoder:
    """Prompt ids (cached per question and tile count) and answer ids, as the engine builds them."""

    def __init__(self, tokens_per_tile):
        self.tok = Tokenizer.from_file(str(TOKENIZER))
        self.tokens_per_tile = tokens_per_tile
        self.cache = {}

    def prompt_ids(self, question, num_tiles):
        key = (question, num_tiles)
        if key not in self.cache:
            text = preprocess.prompt(question, num_tiles, self.tokens_per_tile)
            self.cache[key] = self.tok.encode(text, add_special_tokens=False).ids
        return self.cache[key]

    def text_ids(self, text):
        if text not in self.cache:
            self.cache[text] = self.tok.encode(text, add_special_tokens=False).ids
        return self.cache[text]

    def answer_ids(self, answer):
        return self.tok.encode(answer, add_special_tokens=False).ids + [preprocess.EOS_ID]

    def decode(self, ids):
        return self.tok.decode([i for i in ids if i != preprocess.EOS_ID], skip_special_tokens=True).strip()


def prepare(item):
    """Tiles -> pixel values ([T,3,448,448] float32, or None for a text-only question)."""
    if item["image"] is None:
        return None
    return preprocess.pixel_values(preprocess.tiles(item["image"]))


def conversation(item, num_tiles, encoder):
    """(ids, labels) of one training conversation: the history turns, then the question, every answer learned
    (position i predicts token i + 1; prompts are not learned)."""
    turns = item["history"] + [(item["question"], item["answer"])]
    segments = preprocess.prompt_segments([q for q, _ in turns], num_tiles, encoder.tokens_per_tile)
    ids, labels = [], []
    for segment, (_, answer) in zip(segments, turns):
        p, a = encoder.text_ids(segment), encoder.answer_ids(answer)
        labels += [-100] * len(p) + a
        ids += p + a
    return ids, labels[1:] + [-100]


def token_targets(item):
    """The auxiliary heads' targets of every image token, `[T, tokens_per_tile, 2]`: what covers the token (background
    or a shape and colour, `task.label_of`) and where that shape stands among the picture's shapes (`task.rank_of`).
    The place is the picture's, on every tile: a tile that cannot tell learns how unsure it is, so that only the
    whole-picture view (the thumbnail, or the only tile) marks a shape as surely leftmost or rightmost."""
    classes = preprocess.token_labels(item["labels"], VISION["patch_size"])
    ranks = np.vectorize(lambda c: task.rank_of(c, item["shapes"]), otypes=[classes.dtype])(classes)
    return np.stack([classes, ranks], axis=-1)


def batch(items, encoder):
    """(ids, labels, pixel values, image-token targets) of a batch, right-padded."""
    seqs, labels, pixels, targets = [], [], [], []
    for item in items:
        px = prepare(item)
        s, l = conversation(item, 0 if px is None else px.shape[0], encoder)
        seqs.append(s)
        labels.append(l)
        if px is not None:
            pixels.append(px)
            targets.append(token_targets(item))
    length = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), preprocess.EOS_ID, dtype=torch.long)
    lab = torch.full((len(seqs), length), -100, dtype=torch.long)
    for i, (s, l) in enumerate(zip(seqs, labels)):
        ids[i, : len(s)] = torch.tensor(s)
        lab[i, : len(l)] = torch.tensor(l)
    px = torch.from_numpy(np.concatenate(pixels)) if pixels else None
    classes = torch.from_numpy(np.concatenate(targets)) if targets else None
    return ids, lab, px, classes


class Batches(torch.utils.data.Dataset):
    """Training batch `step` (a pure function of the step), built in a worker process while the model trains."""

    def __init__(self, steps, batch_size, encoder, phases, kinds, attention=()):
        self.steps, self.batch_size, self.encoder, self.phases, self.kinds = steps, batch_size, encoder, phases, kinds
        self.attention = attention

    def __len__(self):
        return self.steps

    def __getitem__(self, step):
        torch.set_num_threads(1)
        p = self.phases
        single = step < p.single_tile
        # After the ViT's own phase: "which shape is on the left" alone, then left and right, then the full mix; a
        # "what colour" phase, if any, comes after those (or, with `colour_first`, before them).
        colour_start, side_start = (p.vit_only, p.colour_only) if p.colour_first else (p.which_side, p.vit_only)
        which_side_only = side_start <= step < p.which_side
        colour_only = colour_start <= step < p.colour_only
        left_only = side_start <= step < p.left_only
        share = 0 if left_only else p.colour_share
        side_kinds = [("which_side", 1 - share)] + ([("what_colour", share)] if share else [])
        colour_kinds = [("what_colour", 1 - p.side_share)] + ([("which_side", p.side_share)] if p.side_share else [])
        kinds = side_kinds if which_side_only else colour_kinds if colour_only else self.kinds
        sides = ("left",) if left_only else ("left", "right")
        # These phases ask one question a picture: earlier turns would mix the other kinds back in.
        turns = 1 if which_side_only or colour_only else 4
        items = [task.sample("train", step * self.batch_size + i, max_turns=turns, single_tile=single, kinds=kinds,
                             sides=sides)
                 for i in range(self.batch_size)]
        ids, labels, pixels, targets = batch(items, self.encoder)
        where = None
        if self.attention:
            where = attention_targets(items, self.encoder, ids, labels, targets, self.attention)
        return ids, labels, pixels, targets, where


def answer_ends(labels):
    """Each conversation's length up to its last learned token (`labels[:, i]` is the target of position `i`)."""
    positions = torch.arange(labels.shape[1]).expand_as(labels)
    return ((labels != -100) * (positions + 1)).amax(1)


def looked_at(item):
    """The shape kind whose image rows answer the item's (last) question, or None: the named shape of "what colour is
    the <shape>?", the shape on the asked side of "which shape is on the left/right?"."""
    words = item["question"].rstrip("?").split()
    if item["kind"] == "what_colour":
        return words[-1]
    if item["kind"] == "which_side":
        return item["shapes"][0 if words[-1] == "left" else -1][0]
    return None


def attention_targets(items, encoder, ids, labels, classes, kinds=(("what_colour", 0),)):
    """Where a question of `kinds` ((kind, head) pairs) should look (`looked_at`): for each conversation whose last
    question is one, the row, the position that predicts the answer's first token, a mask `[length]` of the image rows
    that shape covers (in every tile) and the head taught to look there. Returns (rows, positions, masks, heads) or
    None when the batch has no such question."""
    heads_of = dict(kinds)
    rows, positions, masks, heads = [], [], [], []
    ends, tile = answer_ends(labels), 0
    for b, item in enumerate(items):
        if item["image"] is None:
            continue
        image_positions = (ids[b] == preprocess.IMAGE_CONTEXT_ID).nonzero()[:, 0]
        tiles = len(image_positions) // encoder.tokens_per_tile
        covered = classes[tile : tile + tiles, :, 0].reshape(-1)
        tile += tiles
        if item["kind"] not in heads_of:
            continue
        asked = task.SHAPES.index(looked_at(item))
        of_asked = (covered > 0) & ((covered - 1) // len(task.COLOURS) == asked)
        if not of_asked.any():
            continue  # too small to cover an image token's centre
        mask = torch.zeros(ids.shape[1], dtype=torch.bool)
        mask[image_positions[of_asked]] = True
        rows.append(b)
        positions.append(int(ends[b]) - len(encoder.answer_ids(item["answer"])))
        masks.append(mask)
        heads.append(heads_of[item["kind"]])
    if not rows:
        return None
    return torch.tensor(rows), torch.tensor(positions), torch.stack(masks), torch.tensor(heads)


def attention_kinds(text):
    """`--attention-kinds` as (kind, head) pairs: "what_colour,which_side:2" -> (("what_colour", 0), ("which_side", 2))."""
    pairs = [(kind.partition(":")[0], int(kind.partition(":")[2] or 0)) for kind in text.split(",")]
    return tuple(pairs)


def attention_mass(probs, masks, heads):
    """The attention mass `[m]` that each probed query's head (`heads` [m]) puts on its masked rows (`probs`
    [m, heads, n] from `Qwen2.hidden`)."""
    return (probs[torch.arange(len(heads)), heads] * masks).sum(-1)


def attention_loss(mass):
    """-log of the attention mass on the rows that hold the answer, averaged."""
    return -torch.log(mass.clamp_min(1e-6)).mean()


def answer_loss(model, embeds, labels, length_group=0, attend=None):
    """(cross-entropy of the learned tokens, attention loss). With `length_group`, the conversations run in groups of
    that many of similar length, each padded only to its longest: right padding never reaches a real token (causal
    attention), so this is the padded batch's loss (up to rounding) for about 13% less time a step. With `attend` =
    (layer, rows, positions, masks, heads) (`attention_targets`) the second value is `attention_loss` of those heads of
    that layer; without it, zero."""
    lm = model.language_model
    ends = answer_ends(labels)
    groups = torch.argsort(ends, stable=True).split(length_group) if length_group else [torch.arange(len(labels))]
    hidden, targets, masses = [], [], []
    for group in groups:
        n = int(ends[group].max()) if length_group else labels.shape[1]
        e, lab = (embeds[group, :n], labels[group, :n]) if length_group else (embeds, labels)
        probed = None
        if attend is not None:
            layer, rows, positions, masks, heads = attend
            inside = rows[:, None] == group[None, :]
            probed = inside.any(1)
        if probed is None or not probed.any():
            h = lm.hidden(e)
        else:
            h, probs = lm.hidden(e, (layer, inside[probed].float().argmax(1), positions[probed]))
            masses.append(attention_mass(probs, masks[probed, :n], heads[probed]))
        learned = lab != -100
        hidden.append(h[learned])
        targets.append(lab[learned])
    loss = F.cross_entropy(lm.logits(torch.cat(hidden)), torch.cat(targets))
    return loss, attention_loss(torch.cat(masses)) if masses else torch.zeros(())


def loss_of(model, ids, labels, pixels, token_targets=None, aux_weight=1.0, answers=True, detach=True,
            length_group=0, attend=None, attention_weight=0.0, stats=None):
    """Cross-entropy of the answers (unless `answers` is false: the ViT's own phase), plus (with `token_targets`) the
    auxiliary per-image-token classifications (which shape and colour covers each token; which of the picture's shapes
    it is, from the left): dense supervision that teaches the small ViT shapes and their order far sooner than the
    answers alone (the heads are dropped from the written model). With `detach` the ViT learns from those targets
    only: the LLM reads its features detached, so the answers train the projector and the LLM on features that change
    only as the ViT learns what the targets ask (measured: with the answers also training the ViT from the start, the
    LLM never found "which shape is on the left/right"; see README). Without it the answers train the ViT too.
    `attend` (see `answer_loss`) adds `attention_weight` times the attention loss, whose value goes into `stats`
    (a dict, if given) under "attention" when the batch had a question it teaches."""
    features = model.image_features(pixels) if pixels is not None else None
    loss = torch.zeros(())
    if answers:
        llm_features = features.detach() if features is not None and detach else features
        answer, attention = answer_loss(model, model.embeds(ids, pixels, llm_features), labels, length_group, attend)
        loss = answer + attention_weight * attention
        if stats is not None and attend is not None:
            stats["attention"] = round(attention.item(), 4)
    if token_targets is not None:
        aux_input = model.mlp1(features) if model.aux_on_embeddings else features
        for k, head in enumerate(model.aux_heads):
            aux = head(aux_input)
            loss = loss + aux_weight * F.cross_entropy(aux.reshape(-1, aux.shape[-1]), token_targets[..., k].reshape(-1))
    return loss


def by_kind(records):
    """`{kind: "correct/total"}` of evaluation records, plus `kind@1tile` for the items with a one-tile picture (the
    only view whose tokens see the whole picture is then the tile itself; otherwise it is the thumbnail)."""
    counts = {}
    for r in records:
        keys = [r["item"]["kind"]] + ([r["item"]["kind"] + "@1tile"] if r["tiles"] == 1 else [])
        for key in keys:
            ok, n = counts.get(key, (0, 0))
            counts[key] = (ok + (r["text"] == r["item"]["answer"]), n + 1)
    return {k: f"{ok}/{n}" for k, (ok, n) in sorted(counts.items())}


def answer_items(model, encoder, items, max_new_tokens=16):
    """Greedy answers to `items` (each asked alone, as the test set asks); returns (accuracy, records)."""
    records, correct = [], 0
    model.eval()
    for item in items:
        px = prepare(item)
        n = 0 if px is None else px.shape[0]
        ids = encoder.prompt_ids(item["question"], n)
        new = nvlm_torch.greedy(model, ids, None if px is None else torch.from_numpy(px), max_new_tokens,
                                preprocess.EOS_ID)
        text = encoder.decode(new)
        correct += text == item["answer"]
        records.append(dict(item=item, tiles=n, prompt_ids=ids, new_ids=new, text=text))
    model.train()
    return correct / len(items), records


def probe_accuracy(model, encoder, kinds, single_tile=True, rewrite=lambda item: item, count=60):
    """The probes' measure: greedy accuracy on the first `count` validation items of `kinds` (one question each,
    `rewrite` applied to each item)."""
    items = [rewrite(task.sample("validation", i, single_tile=single_tile, kinds=kinds)) for i in range(count)]
    return answer_items(model, encoder, items, max_new_tokens=8)[0]


def evaluate(model, encoder, split, count, max_new_tokens=16):
    """Greedy answers for the first `count` items of `split`; returns (accuracy, records)."""
    return answer_items(model, encoder, [task.sample(split, index) for index in range(count)], max_new_tokens)


def digest(ids):
    return hashlib.sha256(np.asarray(ids, dtype="<u4").tobytes()).hexdigest()


def write_test_set(records, folder):
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, r in enumerate(records):
        item = r["item"]
        image = None
        if item["image"] is not None:
            image = f"{i:03d}.png"
            item["image"].save(folder / image, optimize=True)
        lines.append(json.dumps({
            "id": i, "kind": item["kind"], "image": image, "question": item["question"], "answer": item["answer"],
            "tiles": r["tiles"], "prompt_len": len(r["prompt_ids"]), "prompt_sha256": digest(r["prompt_ids"]),
            "pytorch_ids": r["new_ids"], "pytorch_answer": r["text"],
        }))
    (folder / "test.jsonl").write_text("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5400)
    ap.add_argument("--single-tile-fraction", type=float, default=0.50278,
                    help="the first part of training uses small one-tile pictures (cheaper, and learned faster)")
    ap.add_argument("--vit-only-fraction", type=float, default=0.18519,
                    help="the first part trains only the ViT, on the auxiliary targets (the LLM then starts on "
                         "features that already say what is where)")
    ap.add_argument("--left-only-fraction", type=float, default=0.33612,
                    help="until here (after the ViT's phase, and the colour phase with --colour-first) the questions "
                         "ask only for the left shape")
    ap.add_argument("--which-side-fraction", type=float, default=0.46945,
                    help="until here the questions are only which shape is on the left or right: among the other "
                         "questions the small model does not find that selection from a cold start")
    ap.add_argument("--colour-only-fraction", type=float, default=0.2963,
                    help="until here the questions are only 'what colour is the <shape>?': a phase right after the "
                         "ViT's with --colour-first, else after the which-side phase (then a value at or below "
                         "--which-side-fraction means no such phase)")
    ap.add_argument("--colour-first", action=argparse.BooleanOptionalAction, default=True,
                    help="the 'what colour' phase comes right after the ViT's, before the left-only and which-side "
                         "phases (then --colour-only-fraction < --left-only-fraction)")
    ap.add_argument("--colour-share", type=float, default=0.25,
                    help="in the which-side phase (after the left-only one), this share of the pictures is asked "
                         "'what colour is the <shape>?' instead (so the phase does not make the LLM forget it)")
    ap.add_argument("--side-share", type=float, default=0.0,
                    help="in the 'what colour' phase, this share of the pictures is asked which shape is on the left "
                         "or right instead (so the phase does not make the LLM forget it)")
    ap.add_argument("--undetach-fraction", type=float, default=1.0,
                    help="from here on the answers train the ViT too (before, the LLM reads its features detached)")
    ap.add_argument("--which-side-weight", type=float, default=2, help="how much more often than the test set")
    ap.add_argument("--colour-weight", type=float, default=3, help="how much more often than the test set")
    ap.add_argument("--length-group", type=int, default=4,
                    help="run the LLM on groups of this many conversations of similar length (`answer_loss`; 0: "
                         "the whole batch padded)")
    ap.add_argument("--attention-weight", type=float, default=1.0,
                    help="weight of a loss that teaches a head of --attention-layer to look, from where the answer to "
                         "a question of --attention-kinds starts, at the image rows of the shape it asks about (0: off)")
    ap.add_argument("--attention-layer", type=int, default=2)
    ap.add_argument("--attention-kinds", default="what_colour,which_side:2",
                    help="comma-separated question kinds the attention loss teaches (what_colour, which_side), each "
                         "optionally with the head it teaches (which_side:2; default head 0)")
    ap.add_argument("--llm-layers", type=int, default=LLM["num_hidden_layers"],
                    help="Qwen2 decoder layers (each adds ~53k parameters; the vocabulary matrix is the file's size)")
    ap.add_argument("--aux-on-embeddings", action="store_true",
                    help="the auxiliary heads read the projector's output (the LLM's image rows), not the ViT's")
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=20261130)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--val-items", type=int, default=100)
    ap.add_argument("--test-items", type=int, default=200)
    ap.add_argument("--out", type=Path, default=ROOT / "assets")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)

    config = nvlm_config(args.llm_layers)
    model = nvlm_torch.NvlmD(config, aux_classes=(task.LABELS, task.RANKS), aux_on_embeddings=args.aux_on_embeddings)
    vc = config["vision_config"]
    tokens_per_tile = (vc["image_size"] // vc["patch_size"]) ** 2 // 4
    encoder = Encoder(tokens_per_tile)
    print(f"parameters: {nvlm_torch.parameter_count(model):,}; {tokens_per_tile} image tokens per tile", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed_tokens" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed_tokens" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98))
    warmup = max(1, args.steps // 20)

    def lr_at(step):
        if step < warmup:
            return args.lr * (step + 1) / warmup
        return args.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, args.steps - warmup)))

    model_dir, test_dir = args.out / "demo-model", args.out / "demo-task" / "test"
    model_dir.mkdir(parents=True, exist_ok=True)
    log = open(model_dir / "training-log.jsonl.tmp", "w")
    start, running, attention_avg = time.time(), None, None
    phases = argparse.Namespace(**{k: int(getattr(args, f"{k}_fraction") * args.steps)
                                   for k in ("vit_only", "colour_only", "left_only", "which_side", "single_tile",
                                             "undetach")})
    phases.colour_first, phases.colour_share, phases.side_share = args.colour_first, args.colour_share, args.side_share
    batches = Batches(args.steps, args.batch, encoder, phases, train_kinds(args.which_side_weight, args.colour_weight),
                      attention=attention_kinds(args.attention_kinds) if args.attention_weight > 0 else ())
    loader = torch.utils.data.DataLoader(batches, batch_size=None,
                                         shuffle=False, num_workers=1, prefetch_factor=4)
    for step, (ids, labels, pixels, targets, where) in enumerate(loader):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        attend = None if where is None else (args.attention_layer, *where)
        stats = {}
        loss = loss_of(model, ids, labels, pixels, targets, answers=step >= phases.vit_only,
                       detach=step < phases.undetach, length_group=args.length_group, attend=attend,
                       attention_weight=args.attention_weight, stats=stats)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if "attention" in stats:
            attention_avg = stats["attention"] if attention_avg is None else 0.95 * attention_avg + 0.05 * stats[
                "attention"]
        entry = {"step": step + 1, "loss": round(loss.item(), 5), "lr": lr_at(step),
                 "elapsed_s": round(time.time() - start, 1), **stats}
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            acc, records = evaluate(model, encoder, "validation", args.val_items)
            entry["validation_accuracy"] = acc
            entry["validation_by_kind"] = by_kind(records)
        if (step + 1) % 20 == 0 or "validation_accuracy" in entry:
            shown = {"attention_avg": round(attention_avg, 4)} if attention_avg is not None else {}
            print(json.dumps({**entry, "loss_avg": round(running, 4), **shown}), flush=True)
        log.write(json.dumps(entry) + "\n")
    log.close()

    nvlm_torch.round_to_bf16_(model)  # evaluate exactly what is written
    val_acc, _ = evaluate(model, encoder, "validation", args.val_items)
    test_acc, records = evaluate(model, encoder, "test", args.test_items)
    summary = {"final": True, "validation_accuracy_bf16": val_acc, "test_accuracy_bf16": test_acc,
               "test_by_kind": by_kind(records),
               "seed": args.seed, "steps": args.steps, "batch": args.batch, "threads": args.threads,
               "torch": torch.__version__, "minutes": round((time.time() - start) / 60, 1)}
    print(json.dumps(summary), flush=True)
    with open(model_dir / "training-log.jsonl.tmp", "a") as f:
        f.write(json.dumps(summary) + "\n")

    tmp = model_dir / "model.safetensors.tmp"
    save_file(nvlm_torch.hf_state_dict(model, vc["num_attention_heads"]), str(tmp), metadata={"format": "pt"})
    (model_dir / "config.json.tmp").write_text(json.dumps(config, indent=2) + "\n")
    write_test_set(records, test_dir)
    example = task.example_image()
    example.save(args.out / "shapes.png.tmp", format="PNG", optimize=True)
    os.replace(args.out / "shapes.png.tmp", args.out / "shapes.png")
    for q in ("Which shape is on the left?", "What colour is the square?", "How many shapes are there?"):
        px = torch.from_numpy(prepare({"image": example}))
        ids = encoder.prompt_ids(q, px.shape[0])
        answer = encoder.decode(nvlm_torch.greedy(model, ids, px, 16, preprocess.EOS_ID))
        print(f"example: {q} -> {answer}", flush=True)
    for name in ("model.safetensors", "config.json", "training-log.jsonl"):
        os.replace(model_dir / f"{name}.tmp", model_dir / name)


if __name__ == "__main__":
    main()
