"""Defaults and choices the library and the command line share, in one place.

Plain Python with no imports: the CLI builds its parsers from these, so ``weightscope --help`` stays fast (no numpy or
torch), and the library reads the same objects, so the two cannot drift apart.
"""

#: checkpoint file suffixes a spec may end with (weightscope.analyses.compare specs, the CLI's early missing-file check)
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")

#: how a checkpoint or model is named wherever a spec is taken (compare, similarity, weightscope.analyses.compare)
SPEC_HELP = (
    "A model is given as: 'bundled' or 'bundled:base' / 'bundled:tuned' (the shipped shapes-world pair); "
    "NAME:TAG for open_clip pretrained weights (e.g. ViT-B-32:openai); NAME:PATH for a checkpoint file of "
    "architecture NAME (e.g. ViT-B-16:ft.pt); a bare file path (.safetensors/.pt/.pth/.bin), whose architecture "
    "is the base's (or the one its weightscope sidecar records); hf-hub:ORG/REPO; or a bare NAME for a randomly "
    "initialised model."
)

#: verdict thresholds of a checkpoint comparison (weightscope.analyses.compare; the CLI's defaults)
COMPARE_DEFAULTS = {"cos_threshold": 0.8, "ratio_tol": 0.05, "change_tol": 1e-4, "tie_factor": 0.25,
                    "noise_factor": 3.0, "top_k": 8, "epsilon": 0.5}

#: Similarity Depth's clustering methods (the authors' four, Affinity Propagation first) and built-in class lists
CLUSTERING_METHODS = ("affinity", "louvain", "optics", "hdbscan")
CLASS_LISTS = ("shapes", "cifar10", "cifar100", "imagenet")
