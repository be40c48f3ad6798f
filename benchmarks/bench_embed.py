#!/usr/bin/env python
"""Concept embedding speed: length-bucketed (cut context) vs open_clip's full 77-token context.

    python benchmarks/bench_embed.py [--n 20000] [--sample 500] [--batch-size 256]

Model: random-init open_clip ViT-B-32 (the text tower's cost does not depend on its weights).
Vocabulary: the first --n lines of concepts/general.txt.

Measured in one run:
1. tokenization of the n concepts (open_clip's tokenizer; shared by both paths);
2. embed_concepts on all n concepts, cache miss: weight hash + tokenization + bucketed encoding
   + splice normalisation + cache write (everything the user waits for);
3. on a fixed random subsample (--sample concepts, seed 0) both paths, encode_texts with
   bucketed=True and bucketed=False, and their max abs difference. The full-context time for all
   n concepts is this subsample's time scaled by n / sample: the full-context run over 20,000
   concepts would take tens of minutes on 2 CPU cores;
4. embed_concepts again: a cache hit in the same process (weight hash memoised), and a cache hit
   after forgetting the memo (the ~0.3 s CRC pass over the text-tower weights included), i.e. what
   a fresh process pays.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from weightscope.concepts import embed  # noqa: E402
from weightscope.models.adapters import openclip_text  # noqa: E402
from weightscope.concepts.vocab import load_vocabulary  # noqa: E402


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--sample", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--model", default="ViT-B-32")
    args = ap.parse_args(argv)

    import open_clip

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = open_clip.create_model(args.model, pretrained=None).eval()
    tok = open_clip.get_tokenizer(args.model)
    concepts = load_vocabulary("general")[: args.n]
    n = len(concepts)
    rng = np.random.default_rng(0)
    sample = [concepts[i] for i in np.sort(rng.choice(n, size=min(args.sample, n), replace=False))]

    print(f"model {args.model} (random init), {n} concepts from general.txt, batch {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}, device cpu")

    (tokens, _), t_tok = _timed(lambda: openclip_text.tokenize(tok, concepts, 77))
    tower = openclip_text.text_tower(model)
    lengths = (openclip_text.pool_positions(tower, tokens) + 1).float()
    print(f"tokens per concept incl. start/end: mean {lengths.mean():.2f}, max {int(lengths.max())} "
          f"(full context: 77)")
    print(f"tokenization of {n} concepts (cold):          {t_tok:8.2f} s")

    with tempfile.TemporaryDirectory() as cache:
        kw = dict(cache_dir=cache, model_name=args.model, batch_size=args.batch_size, progress=True)
        emb, t_miss = _timed(lambda: embed.embed_concepts(model, tok, concepts, **kw))
        print(f"bucketed, all {n} (embed_concepts, cache miss): {t_miss:8.2f} s  -> {emb.shape}")

        enc = dict(batch_size=args.batch_size, progress=False)
        b_sub, t_b_sub = _timed(lambda: embed.encode_texts(model, tok, sample, bucketed=True, **enc))
        f_sub, t_f_sub = _timed(lambda: embed.encode_texts(model, tok, sample, bucketed=False, **enc))
        diff = float(np.abs(b_sub - f_sub).max())
        scale = n / len(sample)
        t_full_est = t_f_sub * scale
        print(f"subsample of {len(sample)}: bucketed {t_b_sub:.2f} s, full context {t_f_sub:.2f} s, "
              f"ratio {t_f_sub / t_b_sub:.1f}x, max |bucketed - full| = {diff:.2e}")
        print(f"full context, all {n} (subsample x {scale:.0f}):   {t_full_est:8.2f} s  (estimated)")
        print(f"speed-up, all {n}: full (est.) / bucketed (measured, incl. hash+tokenize+write) = "
              f"{t_full_est / t_miss:.1f}x")

        hit, t_hit = _timed(lambda: embed.embed_concepts(model, tok, concepts, **kw))
        assert np.array_equal(hit, emb)
        embed.forget_model_hash(model)
        hit2, t_hit_fresh = _timed(lambda: embed.embed_concepts(model, tok, concepts, **kw))
        assert np.array_equal(hit2, emb)
        size = sum(p.stat().st_size for p in Path(cache).rglob("*.wsemb")) / 1e6
        print(f"cache hit, same process (hash memoised):      {t_hit:8.3f} s  ({size:.0f} MB file)")
        print(f"cache hit, weight hash recomputed (fresh):    {t_hit_fresh:8.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
