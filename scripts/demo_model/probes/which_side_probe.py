"""Probe: can the demo model learn "which shape is on the left/right?" (one-tile pictures, that question only)?

    python3 scripts/demo_model/probes/which_side_probe.py --mode staged --steps 1200

Trains the full demo NVLM-D with both auxiliary heads (shape-and-colour class, place among the shapes) on `which_side`
questions about one-tile pictures, "left" only for the first `--left` steps of the LLM, and every 100 steps prints the
answer loss, the auxiliary losses and the greedy accuracy on 60 one-tile validation items. Modes (what the LLM reads
as image features):
  real      the ViT's features, the answers training the ViT too (the original training)
  staged    the ViT's features detached, after `--stage` steps in which only the auxiliary heads train the ViT
  oracle    a clean one-hot code of each token's (class, place) in place of the ViT's features, through the real
            projector (the accuracy printed still uses the ViT's features, so only the answer loss means anything)
Measured (4-layer LLM, 2 cores, about 4 minutes each): `oracle` learns left and right perfectly by step 200-300;
`real` stays at chance for 800 steps although both heads' losses are low; `staged` with `--stage 400` reaches
60-70% by step 800-1200, with `--stage 1000` 90% by step 1500 and 95-100% at 1700-1800.
"""

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import nvlm_torch  # noqa: E402
import task  # noqa: E402
import train  # noqa: E402

WHICH_SIDE = [("which_side", 1)]


def one_hot_code(features, targets):
    """The (class, place) of each token as a one-hot code in the features' width (class at 0.., place at 16..)."""
    code = torch.zeros_like(features)
    code.scatter_(-1, targets[..., :1].clamp(min=0), 1.0)
    code.scatter_(-1, 16 + targets[..., 1:2].clamp(min=0), 1.0)
    return code


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("real", "staged", "oracle"), default="staged")
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--stage", type=int, default=400, help="staged: steps of the ViT alone")
    ap.add_argument("--left", type=int, default=200, help="steps of 'left' questions only (of the LLM's steps)")
    ap.add_argument("--layers", type=int, default=4, help="LLM layers")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(1)
    torch.set_num_threads(args.threads)
    config = train.nvlm_config()
    config["llm_config"]["num_hidden_layers"] = args.layers
    model = nvlm_torch.NvlmD(config, aux_classes=(task.LABELS, task.RANKS))
    encoder = train.Encoder(64)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.98))
    vit_alone = args.stage if args.mode == "staged" else 0
    start = time.time()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = 2e-3 * min(1, (step + 1) / 50)
        sides = ("left",) if step < vit_alone + args.left else ("left", "right")
        items = [task.sample("train", step * 12 + i, single_tile=True, kinds=WHICH_SIDE, sides=sides)
                 for i in range(12)]
        ids, labels, px, targets = train.batch(items, encoder)
        features = model.image_features(px)
        aux = [F.cross_entropy(head(features).reshape(-1, head.out_features), targets[..., k].reshape(-1))
               for k, head in enumerate(model.aux_heads)]
        seen = {"real": features, "staged": features.detach(), "oracle": one_hot_code(features, targets)}[args.mode]
        hidden = model.language_model.hidden(model.embeds(ids, px, seen))
        sel = labels != -100
        answer = F.cross_entropy(model.language_model.logits(hidden[sel]), labels[sel])
        loss = sum(aux) + (answer if step >= vit_alone else 0)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % 100 == 0:
            print(step + 1, "answer", round(answer.item(), 3), "aux", [round(a.item(), 3) for a in aux],
                  "accuracy", round(train.probe_accuracy(model, encoder, WHICH_SIDE), 3),
                  f"{time.time() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
