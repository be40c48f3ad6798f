"""Train (or fine-tune) the shapes-world CLIP from a seed; writes fp16 safetensors loadable by open_clip.

    python -m weightscope.shapes.train --out base.safetensors --steps 1200 --contrast position=0.5,shape=0.5
    python -m weightscope.shapes.train --out tuned.safetensors --init base.safetensors --steps 100 \\
        --lr 3e-4 --warmup 10 --seed 1 --spurious-strength none --contrast position=0.5,shape=0.5
    python -m weightscope.shapes.train --reproduce DIR      # the shipped base and tuned checkpoints into DIR

Data are generated on the fly: step i uses ``hard_negative_batch(batch_size, seed=(seed, i))``, so a run is a pure
function of its arguments (on the same torch build and thread count). The model is a stock open_clip ``CLIP``
built from ``assets/shapes-vit.json`` (VisionTransformer vision tower, default BPE tokenizer, context 32).
Loss: the symmetric InfoNCE of CLIP with a learnable temperature, plus one hard-negative caption per image
on the image->text side (NegCLIP-style, see ``hard_negative_batch``), plus optional attribute-contrast terms
(``_attribute_contrast``); AdamW, linear warm-up, cosine decay.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from weightscope.core.errors import WeightscopeError
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
    """One training batch with a hard-negative caption per image.

    Returns (images (n, S, S, 3) uint8, captions, negatives, scenes). The negative of image i is its own
    caption with one attribute of the first object swapped for a wrong value (default ``neg_mix``: shape 50%,
    position 30%, colour 10%, size 10%) and the same phrasing (the caption's random draws are replayed).
    Without them a 128-image batch is told apart by colour, background and position alone and the shape
    words are barely grounded (shape accuracy ~30% after 600 steps). The background is never
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
    return images, caps, negs, sc


def _attribute_contrast(model, tokenizer, img, scale, scenes, attribute, rng, device):
    """Cross-entropy of each image's first-object class of ``attribute`` against one caption per class.

    img: (B, E) normalised image embeddings of ``scenes``; the captions come from ``world.attribute_captions``
    (one phrasing per step, drawn from rng). A second object's class is also true of the image, so it is
    masked out rather than counted as a negative.
    """
    import torch
    import torch.nn.functional as F

    txt = model.encode_text(tokenizer(world.attribute_captions(attribute, rng)).to(device), normalize=True)
    logits = scale * img @ txt.T
    classes = getattr(scenes, attribute)
    second = torch.as_tensor(classes[:, 1] if classes.shape[1] > 1 else np.full(len(scenes), -1), device=device)
    other = F.one_hot(second.clamp(min=0), txt.shape[0]).bool() & (second >= 0)[:, None]
    other &= second[:, None] != torch.as_tensor(classes[:, 0], device=device)[:, None]
    logits = logits.masked_fill(other, float("-inf"))
    return F.cross_entropy(logits, torch.as_tensor(classes[:, 0], device=device))


def save_fp16(model, path: Path, metadata: dict) -> None:
    """Write the state dict as fp16 safetensors (atomically: a tmp file then rename), and the sidecar every
    checkpoint weightscope writes has (so that it loads by path alone), the run's metadata under "training"."""
    from safetensors.torch import save_file

    from weightscope.models.checkpoints import sha256_file, sidecar_path, sidecar_record
    from weightscope.core.fileio import write_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").half().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={k: str(v) for k, v in metadata.items()})
    os.replace(tmp, path)
    record = sidecar_record(model, sha256_file(path), extra={"training": metadata})
    write_atomic(sidecar_path(path), json.dumps(record, indent=2) + "\n")


#: the training recipe's settings and their defaults (``train``'s ``recipe``)
RECIPE_DEFAULTS = dict(seed=0, steps=500, batch_size=128, lr=1e-3, warmup=40, weight_decay=0.1, spurious_strength=0.9,
                       p_background=0.5, pos_init_scale=10.0, neg_mix=(0.5, 0.3, 0.1, 0.1), contrast=None)


def train(out, recipe: dict | None = None, *, init=None, threads: int = 1, save_every: int = 100,
          log_every: int = 20, device: str = "cpu") -> dict:
    """Train for ``steps`` steps and save fp16 weights to ``out``; returns the run's metadata dict.

    recipe: any of ``RECIPE_DEFAULTS`` (seed, steps, batch_size, lr, warmup, weight_decay, spurious_strength,
    p_background, pos_init_scale, neg_mix, contrast); the rest keep their defaults. Raises WeightscopeError for an
    unknown setting.

    init: optional checkpoint to start from (fine-tuning); otherwise a fresh model seeded by ``seed``.
    spurious_strength / p_background: the data distribution (see ``world.generate``).
    pos_init_scale: multiply a fresh model's visual positional embedding by this (ignored with init).
    neg_mix: probabilities that the hard-negative caption swaps shape, position, colour, size.
    contrast: {attribute: weight} of extra image->text terms (``_attribute_contrast``) that contrast every
    image with one caption per class of the attribute ("a thing in the top left", ..., one phrasing per
    step): hard negatives that differ only in that attribute's words. Position needs one: with nothing
    telling cells apart, both towers sit at a position-invariant saddle and the pair loss gives no gradient.
    device: torch device for the model ("cpu" or "cuda"); data are always generated on the CPU.
    """
    import open_clip
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from weightscope.models.checkpoints import record_provenance

    unknown_settings = sorted(set(recipe or {}) - set(RECIPE_DEFAULTS))
    if unknown_settings:
        raise WeightscopeError(f"unknown recipe setting(s) {unknown_settings}; choose from {sorted(RECIPE_DEFAULTS)}")
    r = {**RECIPE_DEFAULTS, **(recipe or {})}
    seed, steps, batch_size, lr, warmup = r["seed"], r["steps"], r["batch_size"], r["lr"], r["warmup"]
    weight_decay, spurious_strength, p_background = r["weight_decay"], r["spurious_strength"], r["p_background"]
    pos_init_scale, neg_mix = r["pos_init_scale"], r["neg_mix"]
    contrast = dict(r["contrast"] or {})
    if steps <= 0 or batch_size < 2:
        raise WeightscopeError(f"need steps > 0 and batch_size >= 2, got steps={steps}, batch_size={batch_size}")
    unknown = sorted(set(contrast) - set(world.ATTRIBUTES))
    if unknown:
        raise WeightscopeError(f"unknown contrast attribute(s) {unknown}; choose from {sorted(world.ATTRIBUTES)}")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    bundled.register()
    model = open_clip.create_model(bundled.MODEL_NAME, pretrained=str(init) if init else None)
    record_provenance(model, bundled.MODEL_NAME, {}, {"model": bundled.MODEL_NAME, "source": str(init or "random-init"),
                                                      **({"checkpoint": str(init)} if init else {})})
    if not init and pos_init_scale != 1.0:
        # open_clip draws the positional embedding ~10x smaller than a patch embedding (norm ~1 vs ~12).
        # With 16-pixel patches on the 3x3 grid an object sits inside one patch, so where it is lives only
        # in the positional embedding; at the default scale position stayed at chance (MODEL_CARD.md).
        with torch.no_grad():
            model.visual.positional_embedding.mul_(pos_init_scale)
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
            "open_clip": open_clip.__version__, "pos_init_scale": pos_init_scale,
            "neg_mix": ",".join(str(v) for v in neg_mix),
            "contrast": ",".join(f"{k}={v}" for k, v in contrast.items()), "device": device}
    labels = torch.arange(batch_size, device=device)
    t0 = time.time()
    running = None
    bar = tqdm(range(steps), desc="train shapes-vit", mininterval=5.0)
    for i in bar:
        images, caps, negs, scenes = hard_negative_batch(batch_size, (seed, i), spurious_strength=spurious_strength,
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
        not_negative = torch.cat([torch.zeros(batch_size, dtype=torch.bool, device=device), neg_mask])
        logits_i2t = logits.masked_fill(not_negative[None], float("-inf"))
        loss = 0.5 * (F.cross_entropy(logits_i2t, labels) + F.cross_entropy(logits[:, :batch_size].T, labels))
        phrasing = np.random.default_rng((seed, i, 7))
        for attribute, weight in contrast.items():
            loss = loss + weight * _attribute_contrast(model, tokenizer, img, scale, scenes, attribute, phrasing,
                                                       device)
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
        if (i + 1) % save_every == 0 or i + 1 == steps:
            meta.update(train_seconds=round(time.time() - t0, 1), final_loss=round(running, 4),
                        steps_done=i + 1)
            save_fp16(model, out, meta)
    model.token_embedding.sparse = False
    return meta


# The recipes of the shipped checkpoints (keyword arguments of ``train``; the tuned model's "init" is the base).
# Both use the attribute-contrast terms: position because nothing else breaks the position-invariant saddle,
# shape because the small shapes (9 pixels across) are the hardest attribute (0.88 without the term, 0.95 with).
BASE_RECIPE = dict(seed=0, steps=1200, contrast={"position": 0.5, "shape": 0.5})
TUNED_RECIPE = dict(seed=1, steps=100, lr=3e-4, warmup=10, spurious_strength=None,
                    contrast={"position": 0.5, "shape": 0.5})


def reproduce(out_dir) -> dict:
    """Re-run the recipes of the shipped checkpoints into out_dir; returns {"base": path, "tuned": path}."""
    out_dir = Path(out_dir)
    base = out_dir / f"{bundled.MODEL_NAME}-base.safetensors"
    tuned = out_dir / f"{bundled.MODEL_NAME}-tuned.safetensors"
    train(base, BASE_RECIPE)
    train(tuned, TUNED_RECIPE, init=base)
    return {"base": base, "tuned": tuned}


def _parse_contrast(text: str) -> dict:
    out = {}
    for item in filter(None, text.split(",")):
        name, _, weight = item.partition("=")
        try:
            out[name.strip()] = float(weight)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected ATTR=WEIGHT (e.g. position=0.5), got {item!r}") from None
    return out


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
    p.add_argument("--contrast", default="", type=_parse_contrast,
                   help="attribute-contrast terms as ATTR=WEIGHT,... e.g. position=0.5,shape=0.5")
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
    recipe = dict(seed=a.seed, steps=a.steps, batch_size=a.batch_size, lr=a.lr, warmup=a.warmup,
                  weight_decay=a.weight_decay, spurious_strength=strength, p_background=a.p_background,
                  pos_init_scale=a.pos_init_scale, neg_mix=tuple(float(v) for v in a.neg_mix.split(",")),
                  contrast=a.contrast)
    meta = train(a.out, recipe, init=a.init, threads=a.threads, save_every=a.save_every, device=a.device)
    print(json.dumps(meta, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
