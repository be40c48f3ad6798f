"""Train (or fine-tune) the shapes-world CLIP from a seed; writes fp16 safetensors loadable by open_clip.

    python -m weightscope.shapes.train --out stage1.safetensors --steps 1200 --stop-at 400 --pos-init-scale 1
    python -m weightscope.shapes.train --out base.safetensors --init stage1.safetensors --steps 250 \\
        --lr 5e-4 --warmup 10 --seed 2 --neg-mix 0.3,0.6,0.05,0.05          # the shipped base model
    python -m weightscope.shapes.train --out tuned.safetensors --init base.safetensors --steps 100 \\
        --lr 3e-4 --warmup 10 --seed 1 --spurious-strength none             # the shipped tuned model
    python -m weightscope.shapes.train --reproduce DIR                      # all three stages into DIR

Data are generated on the fly: step i uses ``hard_negative_batch(batch_size, seed=(seed, i))``, so a run is a pure
function of its arguments (on the same torch build and thread count). The model is a stock open_clip ``CLIP``
built from ``assets/shapes-vit.json`` (VisionTransformer vision tower, default BPE tokenizer, context 32).
Loss: the symmetric InfoNCE of CLIP with a learnable temperature, plus one hard-negative caption per image
on the image->text side (NegCLIP-style, see ``hard_negative_batch``); AdamW, linear warm-up, cosine decay.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from weightscope.errors import WeightscopeError
from weightscope.shapes import bundled, world
from weightscope.shapes.evaluate import images_to_tensor


def _param_groups(model, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        # gains, biases, embeddings and the temperature are not shrunk (the usual CLIP recipe)
        if p.ndim < 2 or "embedding" in name or "logit_scale" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def hard_negative_batch(n: int, seed, *, spurious_strength: float | None = 0.9, p_background: float = 0.5,
                        neg_mix=(0.5, 0.3, 0.1, 0.1)):
    """One training batch with a hard-negative caption per image: (images (n,S,S,3) uint8, captions, negatives).

    The negative of image i is its own caption with one attribute of the first object swapped for a wrong
    value (default ``neg_mix``: shape 50%, position 30%, colour 10%, size 10%) and the same phrasing (the caption's random draws
    are replayed). Without them a 128-image batch is told apart by colour, background and position alone
    and the shape words are barely grounded (shape accuracy ~30% after 600 steps). The background is never
    swapped, so the spurious background-family association of the pre-training data is still learned.
    Where the swapped attribute is not mentioned the negative equals the caption; the loss masks those.
    """
    rng = np.random.default_rng(seed)
    sc = world.sample_scenes(n, rng, spurious_strength=spurious_strength)
    images = world.render(sc, rng)
    which = rng.choice(4, size=n, p=list(neg_mix))
    sizes = {0: len(world.SHAPES), 1: len(world.POSITIONS), 2: len(world.COLOURS), 3: len(world.SIZES)}
    fields = {0: "shape", 1: "position", 2: "colour", 3: "size"}
    swapped = {f: getattr(sc, f).copy() for f in fields.values()}
    for w, f in fields.items():
        idx = np.flatnonzero(which == w)
        swapped[f][idx, 0] = (swapped[f][idx, 0] + rng.integers(1, sizes[w], size=idx.size)) % sizes[w]
    neg_scenes = world.Scenes(**{**sc.__dict__, **swapped})
    caps, negs = [], []
    for i in range(n):
        state = rng.bit_generator.state
        caps.append(world.caption_scene(sc, i, rng, p_background))
        replay = np.random.Generator(np.random.PCG64())
        replay.bit_generator.state = state
        negs.append(world.caption_scene(neg_scenes, i, replay, p_background))
    return images, caps, negs


def _position_loss(model, tokenizer, img, scale, seed, device, spurious_strength=0.9):
    """Cross-entropy of each image's first-object position against the nine one-position captions.

    img: (B, D) normalised image embeddings of ``hard_negative_batch(B, seed)``; the scenes are redrawn
    from the same seed (cheap: no rendering). A second object's cell is also true, so it is masked.
    """
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    sc = world.sample_scenes(img.shape[0], rng, spurious_strength=spurious_strength)
    draw = np.random.default_rng((*seed, 7))
    noun = ("object", "shape", "thing")[draw.integers(3)]
    prefix = ("", "a photo of ", "an image of ", "a picture of ")[draw.integers(4)]
    art = "an" if noun[0] in "aeiou" else "a"
    prompts = [f"{prefix}{art} {noun} in the {p}" for p in world.POSITIONS]
    txt = model.encode_text(tokenizer(prompts).to(device), normalize=True)
    logits = scale * img @ txt.T
    second = torch.as_tensor(sc.position[:, 1] if sc.position.shape[1] > 1 else np.full(len(sc), -1))
    mask = F.one_hot(second.clamp(min=0), len(world.POSITIONS)).bool() & (second >= 0)[:, None]
    logits = logits.masked_fill(mask.to(device), float("-inf"))
    return F.cross_entropy(logits, torch.as_tensor(sc.position[:, 0], device=device))


def save_fp16(model, path: Path, metadata: dict) -> None:
    """Write the state dict as fp16 safetensors (atomically: a tmp file then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").half().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={k: str(v) for k, v in metadata.items()})
    os.replace(tmp, path)


def train(out, *, seed: int = 0, steps: int = 500, batch_size: int = 128, lr: float = 1e-3,
          warmup: int = 40, weight_decay: float = 0.1, spurious_strength: float | None = 0.9,
          p_background: float = 0.5, init=None, threads: int = 1, save_every: int = 100,
          log_every: int = 20, stop_at: int | None = None, pos_init_scale: float = 10.0,
          neg_mix=(0.5, 0.3, 0.1, 0.1), rescale_pos: float = 1.0, position_weight: float = 0.0,
          device: str = "cpu") -> dict:
    """Train for ``steps`` steps and save fp16 weights to ``out``; returns the run's metadata dict.

    init: optional checkpoint to start from (fine-tuning); otherwise a fresh model seeded by ``seed``.
    stop_at: end after this many steps of the ``steps``-long schedule (identical to the first stop_at steps
    of the full run; the shipped base model was cut this way when the shared CPU was too slow).
    spurious_strength / p_background: the data distribution (see ``world.generate``).
    rescale_pos: multiply the *loaded* (init) model's visual positional embedding by this before training.
    position_weight: weight of an extra image->text term that contrasts every image with the nine captions
    "<prefix>a(n) <noun> in the <position>" (one per grid cell, phrasing drawn per step): eight hard
    negatives that differ only in the position words. Needed because the image and text towers sit at a
    saddle for position (neither side carries it, so neither gets a gradient for it from the pair loss).
    device: torch device for the model ("cpu" or "cuda"); data are always generated on the CPU.
    """
    import open_clip
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    if stop_at is not None and not 0 < stop_at <= steps:
        raise WeightscopeError(f"stop_at must be in 1..steps={steps}, got {stop_at}")
    if steps <= 0 or batch_size < 2:
        raise WeightscopeError(f"need steps > 0 and batch_size >= 2, got steps={steps}, batch_size={batch_size}")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    bundled.register()
    model = open_clip.create_model(bundled.MODEL_NAME, pretrained=str(init) if init else None)
    if not init and pos_init_scale != 1.0:
        # open_clip draws the positional embedding ~10x smaller than a patch embedding; after ln_pre the
        # object token then carries almost no position and position words stayed at chance for 400 steps.
        with torch.no_grad():
            model.visual.positional_embedding.mul_(pos_init_scale)
    if init and rescale_pos != 1.0:
        # With 16-pixel patches aligned to the 3x3 grid an object sits inside one patch, so where it is lives
        # only in the positional embedding; in the shipped stage-1/2 weights that embedding has norm ~1 against
        # ~12 for a patch embedding (background colour and pixel noise), so after ln_pre the tokens carry almost
        # no position, no image embedding differs by position and position words never got a gradient.
        with torch.no_grad():
            model.visual.positional_embedding.mul_(rescale_pos)
    model.to(device)
    model.train()
    tokenizer = open_clip.get_tokenizer(bundled.MODEL_NAME)
    # The 49408-row token embedding is most of the parameters but a caption batch touches ~60 rows: a sparse
    # gradient with SparseAdam updates only those rows, which makes a CPU step several times cheaper.
    model.token_embedding.sparse = True
    groups = _param_groups(model, weight_decay)
    groups[1]["params"] = [p for p in groups[1]["params"] if p is not model.token_embedding.weight]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)
    opt_emb = torch.optim.SparseAdam([model.token_embedding.weight], lr=lr, betas=(0.9, 0.98), eps=1e-6)

    def lr_at(i):
        if i < warmup:
            return lr * (i + 1) / warmup
        return 0.5 * lr * (1 + math.cos(math.pi * (i - warmup) / max(1, steps - warmup)))

    meta = {"seed": seed, "steps": steps, "batch_size": batch_size, "lr": lr, "warmup": warmup,
            "weight_decay": weight_decay, "spurious_strength": spurious_strength, "p_background": p_background,
            "init": Path(init).name if init else "", "threads": threads, "torch": torch.__version__,
            "open_clip": open_clip.__version__, "stop_at": stop_at or steps,
            "pos_init_scale": pos_init_scale,
            "neg_mix": ",".join(str(v) for v in neg_mix), "rescale_pos": rescale_pos,
            "position_weight": position_weight, "device": device}
    labels = torch.arange(batch_size, device=device)
    t0 = time.time()
    running = None
    n_run = stop_at or steps
    bar = tqdm(range(n_run), desc="train shapes-vit", mininterval=5.0)
    for i in bar:
        images, caps, negs = hard_negative_batch(batch_size, (seed, i), spurious_strength=spurious_strength,
                                                 p_background=p_background, neg_mix=neg_mix)
        x = images_to_tensor(images).to(device)
        t = tokenizer(caps + negs).to(device)
        # a negative identical to some positive caption in the batch is not a negative: mask it
        pos_set = set(caps)
        neg_mask = torch.tensor([ng in pos_set for ng in negs], device=device)
        for g in opt.param_groups + opt_emb.param_groups:
            g["lr"] = lr_at(i)
        img, txt, scale = model(x, t)[:3]
        logits = scale * img @ txt.T  # (B, 2B): positives then hard negatives
        logits_i2t = logits.masked_fill(torch.cat([torch.zeros(batch_size, dtype=torch.bool, device=device), neg_mask])[None],
                                        float("-inf"))
        loss = 0.5 * (F.cross_entropy(logits_i2t, labels) + F.cross_entropy(logits[:, :batch_size].T, labels))
        if position_weight > 0:
            loss = loss + position_weight * _position_loss(model, tokenizer, img, scale, (seed, i), device,
                                                             spurious_strength)
        opt.zero_grad(set_to_none=True)
        opt_emb.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        opt_emb.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        bar.set_postfix(loss=f"{running:.3f}")
        if (i + 1) % log_every == 0:
            print(f"step {i + 1}/{steps} loss {running:.4f} scale {scale.item():.1f} "
                  f"elapsed {time.time() - t0:.0f}s", flush=True)
        if (i + 1) % save_every == 0 or i + 1 == n_run:
            meta.update(train_seconds=round(time.time() - t0, 1), final_loss=round(running, 4),
                        steps_done=i + 1)
            save_fp16(model, out, meta)
    model.token_embedding.sparse = False
    return meta


# The recipes of the shipped checkpoints (keyword arguments of ``train``, stage by stage; "init" names the
# previous stage's output). Stage 1 was cut at step 400 of a 1200-step schedule (shared CPU too slow), made
# before pos_init_scale existed (hence 1.0); stage 2 puts more hard negatives on position. Neither learned
# position (see MODEL_CARD.md): the positional embedding stays ~12x smaller than a patch embedding and both
# towers sit at a position-invariant saddle; ``rescale_pos`` / ``position_weight`` are the tools tried on it.
BASE_RECIPE = (
    dict(seed=0, steps=1200, stop_at=400, pos_init_scale=1.0),
    dict(seed=2, steps=250, lr=5e-4, warmup=10, neg_mix=(0.3, 0.6, 0.05, 0.05), init="stage1"),
)
TUNED_RECIPE = dict(seed=1, steps=100, lr=3e-4, warmup=10, spurious_strength=None, init="base")


def reproduce(out_dir) -> dict:
    """Re-run the recipes of the shipped checkpoints into out_dir; returns {"base": path, "tuned": path}."""
    out_dir = Path(out_dir)
    stage1 = out_dir / "stage1.safetensors"
    base = out_dir / f"{bundled.MODEL_NAME}-base.safetensors"
    tuned = out_dir / f"{bundled.MODEL_NAME}-tuned.safetensors"
    train(stage1, **BASE_RECIPE[0])
    train(base, **{**BASE_RECIPE[1], "init": stage1})
    train(tuned, **{**TUNED_RECIPE, "init": base})
    return {"base": base, "tuned": tuned}


def _parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m weightscope.shapes.train", description=__doc__.split("\n")[0])
    p.add_argument("--out", help="output .safetensors path")
    p.add_argument("--reproduce", metavar="DIR", help="re-run the recipes of the shipped checkpoints into DIR")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=40)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--spurious-strength", default="0.9", help="P(home background | family) or 'none'")
    p.add_argument("--p-background", type=float, default=0.5, help="probability a caption names the background")
    p.add_argument("--init", default=None, help="checkpoint to fine-tune from")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--pos-init-scale", type=float, default=10.0,
                   help="multiply the fresh model's visual positional embedding by this (ignored with --init)")
    p.add_argument("--neg-mix", default="0.5,0.3,0.1,0.1",
                   help="probabilities that the hard negative swaps shape,position,colour,size")
    p.add_argument("--stop-at", type=int, default=None, help="stop after this many steps of the schedule")
    p.add_argument("--rescale-pos", type=float, default=1.0,
                   help="multiply the --init model's visual positional embedding by this before training")
    p.add_argument("--position-weight", type=float, default=0.0,
                   help="weight of the image vs nine one-position captions term (0: off)")
    p.add_argument("--device", default="cpu", help="torch device of the model (cpu, cuda)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = _parse(argv)
    if a.reproduce:
        print(json.dumps({k: str(v) for k, v in reproduce(a.reproduce).items()}))
        return 0
    if not a.out:
        raise SystemExit("give --out PATH (or --reproduce DIR)")
    strength = None if a.spurious_strength.lower() == "none" else float(a.spurious_strength)
    meta = train(a.out, seed=a.seed, steps=a.steps, batch_size=a.batch_size, lr=a.lr, warmup=a.warmup,
                 weight_decay=a.weight_decay, spurious_strength=strength, p_background=a.p_background,
                 init=a.init, threads=a.threads, save_every=a.save_every, stop_at=a.stop_at,
                 pos_init_scale=a.pos_init_scale, rescale_pos=a.rescale_pos, position_weight=a.position_weight, device=a.device, neg_mix=tuple(float(v) for v in a.neg_mix.split(",")))
    print(json.dumps(meta, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
