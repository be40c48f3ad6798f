"""A small, repeatable mutation run over weightscope's core (issue 21). Not part of CI.

Each mutant is one small fault planted by rewriting the syntax tree of one function (an operator swapped, a
comparison loosened, a sign or ``not`` dropped, a constant changed, a statement removed); the module's fast test
selection then runs against it in a scratch copy of the repository. A mutant is *killed* when the selection fails
(or runs past its time limit), *survives* otherwise. Score = killed / (mutants - known equivalent ones).

    python tools/mutation.py                    # seeded sample of 25 mutants per target, 2 workers
    python tools/mutation.py --per-target 0     # every mutant (a few hours on 2 cores)
    python tools/mutation.py --targets joint,select --jobs 1 --seed 3
    python tools/mutation.py --targets new --per-target 10 --jobs 1   # the newer modules (issue 27)
    python tools/mutation.py --list             # show the mutants that would run, run nothing

Run from the repository root with the project's virtualenv (``/work/main/.venv/bin/python tools/mutation.py``).
It never touches the working tree: every worker mutates its own copy under a temporary folder. Results go to
``--out`` (default ``mutation-results.json``) and a summary to stdout; survivors print with file, line, the
original and the mutated code. Triage lives in ``tools/MUTATION.md``; ``EQUIVALENT`` below lists the surviving
mutants judged equivalent (same behaviour for every input), keyed by target, function, original and mutated code.

Targets and their test selections are in ``TARGETS`` (``NEW_TARGETS``: sing, depth, similarity, compare, neurons,
classifiers and the depth report, added for issue 27). The default sample (seed 0, 25 per target) of the first
8 targets finishes in about 20-25 minutes on 2 busy cores.
"""
from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: name -> (file, functions to mutate (None: every function in the file), pytest arguments)
TARGETS = {
    "linalg": ("weightscope/core/linalg.py", None,
               ["tests/test_linalg.py", "tests/test_decompose.py", "-k", "not vit_b16 and not vit_l14"]),
    "joint": ("weightscope/decompose/joint.py", None, ["tests/test_joint.py"]),
    "decompose": ("weightscope/decompose/head_svd.py", None,
                  ["tests/test_decompose.py", "-k", "not vit_b16 and not vit_l14"]),
    "edit": ("weightscope/analyses/edit.py", ["_plan", "resolve_edits", "edit_weights", "apply_edits"],
             ["tests/test_edit.py", "-k", "(rescales or dense_reference or reference_forward or tiny or layerscale "
              "or degenerate or bad_edits or widens) and not vit"]),
    "cache_key": ("weightscope/concepts/embed.py", ["text_tower_hash", "vocabulary_hash", "cache_key", "cache_path"],
                  ["tests/test_embed.py", "-k", "cache_key or hashes or cache_hit or misses_the_cache or ulp "
                   "or layout or settings or file_names"]),
    "text_tensors": ("weightscope/models/adapters/openclip_text.py",
                     ["text_tower_tensors", "tensor_signature", "tensor_digest_records", "tokenizer_fingerprint"],
                     ["tests/test_embed.py", "-k", "cache_key or hashes or cache_hit or misses_the_cache or ulp "
                      "or layout or wrapper or fingerprint"]),
    "select": ("weightscope/analyses/select.py", None, ["tests/test_select.py"]),
    "report": ("weightscope/reports/inspection.py", ["_card", "write_report"],
               ["tests/test_report_html.py", "-k", "hand_made"]),
    # the newer modules (issue 27)
    "sing_statistics": ("weightscope/analyses/sing/statistics.py",
                        ["flag_shares", "abs_as", "reachable", "per_text", "per_family", "per_class", "overall",
                         "leakage", "_optimal_as"],
                        ["tests/test_pins.py", "tests/test_sing_statistics.py", "-k",
                         "sing_statistics or hand_checkable or aggregates or thresholds or batched or just_below"]),
    "sing_geometry": ("weightscope/analyses/sing/geometry.py", None,
                      ["tests/test_pins.py", "tests/test_sing.py", "-k",
                       "leakage or just_below or row_null or rank_tolerance or split_energy or equivalent_features or analytic "
                       "or steered_feature or optimal_against or edge_cases or visibility_matches"]),
    "sing_leakage": ("weightscope/analyses/sing/analysis.py", ["leakage", "_steering_row", "SteeringRow.abs_as"],
                     ["tests/test_pins.py", "-k", "leakage"]),  # test_leakage_skips_... included
    "depth": ("weightscope/analyses/depth/core.py", None,
              ["tests/test_depth.py", "-k", "hand_built or normalisation or maximum_spanning or authors or order "
               "or ties or noise or compliance_under or hand_made or bad_matrices or input_order or canonical "
               "or non_convergence"]),
    "similarity": ("weightscope/analyses/similarity/measures.py", None,
                   ["tests/test_pins.py", "tests/test_similarity.py", "-k",
                    "similarity_summaries or cka or unit_diagonal or subspace_similarity or depth_alignment"]),
    "compare": ("weightscope/analyses/compare/results.py", None,
                ["tests/test_pins.py", "tests/test_compare.py", "-k",
                 "comparison_summaries or ground_truth_reports or energy_split or json_round_trip or labels_rank "
                 "or identical_checkpoints"]),
    "neurons": ("weightscope/analyses/neurons.py",
                ["neuron_vectors", "joint_matrix", "joint_preimage", "neuron_scores", "position_ratio",
                 "_product_sq_norm", "change_by_kind"],
                ["tests/test_pins.py", "tests/test_neurons.py", "-k",
                 "neuron_read or match_the_torch or position_ratio or change_by_kind"]),
    "classifiers": ("weightscope/models/classifiers.py",
                    ["preprocess_images", "Classifier.preprocess", "Classifier.features_and_logits",
                     "Classifier.features", "Classifier.logits", "_finish", "_check_preprocessing"],
                    ["tests/test_classifiers.py", "-k", "features_through or the_head_is or save_and_load or "
                     "preprocess or mixed_sizes"]),
    "reports_depth": ("weightscope/reports/depth.py", ["summary_rows", "edge_rows", "report_html", "write_report"],
                      ["tests/test_depth.py", "-k", "report or unrelated_sense"]),
}

#: the targets of the newer modules, sampled by ``--targets new``
NEW_TARGETS = ("sing_statistics", "sing_geometry", "sing_leakage", "depth", "similarity", "compare", "neurons",
               "classifiers", "reports_depth")

#: (target, function, original, mutated code) of survivors judged equivalent; the reasons are in tools/MUTATION.md.
EQUIVALENT: set[tuple[str, str, str, str]] = {
    ('linalg', 'fix_signs', 'U * signs',
     'U / signs'),
    ('decompose', 'decompose_model', '1',
     '2'),
    ('edit', 'edit_weights', 'B - B.mean(axis=1, keepdims=True)',
     'B + B.mean(axis=1, keepdims=True)'),
    ('cache_key', 'text_tower_hash', '_hash_memo[root] = (sig, digest)',
     'pass # statement removed'),
    ('cache_key', 'text_tower_hash', '0',
     '1'),
    ('cache_key', 'text_tower_hash', 'True',
     'False'),
    ('cache_key', 'vocabulary_hash', 'False',
     'True'),
    ('cache_key', 'cache_key', 'True',
     'False'),
    ('cache_key', 'cache_path', '60',
     '61'),
    ('text_tensors', 'text_tower_tensors', "items = {k: v for k, v in items.items() if k.startswith('text.')}",
     'pass # statement removed'),
    ('text_tensors', 'tensor_digest_records', 'data.element_size() == 1',
     'data.element_size() != 1'),
    ('select', 'score_by_query', 'True',
     'False'),
    ('sing_geometry', 'scores', 'f, f_tilde, t = (np.asarray(x, dtype=np.float64) for x in (f, f_tilde, t))',
     'pass # statement removed'),
    ('classifiers', 'Classifier.features_and_logits', '256',
     '257'),
}

_SWAP_BIN = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.Pow: ast.Mult,
             ast.FloorDiv: ast.Div, ast.Mod: ast.Mult}
_SWAP_CMP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
             ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}


@dataclass
class Mutant:
    target: str
    function: str
    number: int      # position among the target's mutation points (stable for a given source)
    line: int
    original: str
    mutated: str
    status: str = ""
    seconds: float = 0.0


def _functions(tree: ast.Module, names):
    """(qualified name, node) of the functions to mutate: module functions and methods, in source order."""
    out = []
    for node in tree.body:
        items = [(node.name, node)] if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else []
        if isinstance(node, ast.ClassDef):
            items = [(f"{node.name}.{n.name}", n) for n in node.body if isinstance(n, ast.FunctionDef)]
        out.extend((q, n) for q, n in items if names is None or q in names or q.split(".")[-1] in names)
    return out


def _points(func: ast.AST):
    """Mutation points of one function: (node, kind) in a deterministic walk order. Docstrings and f-strings
    (messages) are left alone."""
    skip = set()
    body = getattr(func, "body", [])
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        skip.add(id(body[0]))
    for node in ast.walk(func):
        if isinstance(node, ast.JoinedStr):
            skip.update(id(n) for n in ast.walk(node))
    points = []
    for node in ast.walk(func):
        if id(node) in skip or node is func:
            continue
        if isinstance(node, ast.BinOp) and type(node.op) in _SWAP_BIN:
            points.append((node, "binop"))
            points.append((node, "drop_right"))
        elif isinstance(node, ast.AugAssign) and type(node.op) in _SWAP_BIN:
            points.append((node, "augop"))
        elif isinstance(node, ast.Compare) and type(node.ops[0]) in _SWAP_CMP:
            points.append((node, "compare"))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Not)):
            points.append((node, "unary"))
        elif isinstance(node, ast.BoolOp):
            points.append((node, "boolop"))
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float, bool):
            points.append((node, "constant"))
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.Expr)) and id(node) not in skip \
                and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            points.append((node, "delete"))
    return points


def _mutate(node: ast.AST, kind: str) -> ast.AST:
    """A mutated copy of ``node``."""
    new = copy.deepcopy(node)
    if kind in ("binop", "augop"):
        new.op = _SWAP_BIN[type(node.op)]()
    elif kind == "drop_right":
        return new.left  # a - b -> a, x * g -> x: a term or factor dropped
    elif kind == "compare":
        new.ops = [_SWAP_CMP[type(node.ops[0])]()] + new.ops[1:]
    elif kind == "unary":
        return new.operand
    elif kind == "boolop":
        new.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif kind == "constant":
        v = node.value
        new.value = (not v) if isinstance(v, bool) else (v + 1 if isinstance(v, int) else (v * 2 if v else 1.0))
    elif kind == "delete":
        return ast.Pass()
    return new


class _Replace(ast.NodeTransformer):
    def __init__(self, target, replacement):
        self.target, self.replacement = target, replacement

    def visit(self, node):
        if node is self.target:
            return self.replacement
        return super().visit(node)


def enumerate_mutants(name: str):
    """Every mutant of a target: [(Mutant, mutated module source)], deduplicated against the original."""
    path, names, _ = TARGETS[name]
    source = (ROOT / path).read_text()
    original = ast.unparse(ast.parse(source))
    out, number = [], 0
    for qual, func in _functions(ast.parse(source), names):
        for i, (node, kind) in enumerate(_points(func)):
            tree = ast.parse(source)
            twin, _ = _points(dict(_functions(tree, names))[qual])[i]  # the same node in a fresh tree
            mutated_node = _mutate(twin, kind)
            text = ast.unparse(ast.fix_missing_locations(_Replace(twin, mutated_node).visit(tree)))
            number += 1
            if text == original:
                continue
            before = ast.unparse(node)
            after = "pass  # statement removed" if isinstance(mutated_node, ast.Pass) else ast.unparse(mutated_node)
            out.append((Mutant(name, qual, number, getattr(node, "lineno", 0), *_changed_part(before, after)), text))
    return out


def _changed_part(before: str, after: str, context: int = 40) -> tuple[str, str]:
    """The differing middle of two one-statement texts, with some context, on one line each."""
    before, after = " ".join(before.split()), " ".join(after.split())
    if after.startswith("pass  #") or len(before) <= 2 * context + 40:
        return before[:160], after[:160]
    i = 0
    while i < min(len(before), len(after)) and before[i] == after[i]:
        i += 1
    j = 0
    while j < min(len(before), len(after)) - i and before[-1 - j] == after[-1 - j]:
        j += 1
    lo = max(0, i - context)

    def cut(t):
        return ("..." if lo else "") + t[lo:len(t) - j + context] + ("..." if j > context else "")

    return cut(before), cut(after)


def _copy_repo(dest: Path) -> None:
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(".git", ".ci-venv", "__pycache__", "*.pyc",
                                                               "mutation-results.json", ".pytest_cache"))


PRELOAD = ("numpy", "scipy.linalg", "scipy.optimize", "scipy.special", "sklearn.linear_model", "torch", "open_clip",
           "numba", "matplotlib.pyplot", "safetensors.torch", "threadpoolctl", "tqdm.auto", "hypothesis", "pytest")


def serve(workdir: str) -> None:
    """Worker loop (``--serve DIR``): import the heavy dependencies once (never weightscope), then for each request
    line ``{"args": [...], "timeout": s}`` on stdin fork a child that runs pytest in DIR on whatever the package
    holds now, and answer ``{"rc": exit code or null on timeout, "seconds": s}``. Saves the ~5-20 s interpreter and
    torch start-up per mutant."""
    import importlib
    import signal

    for mod in PRELOAD:
        importlib.import_module(mod)
    os.chdir(workdir)
    sys.path.insert(0, workdir)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:  # child: a fresh pytest session; weightscope is imported here, from the mutated copy
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            import pytest

            code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", *req["args"]])
            os._exit(int(code))
        rc = None
        while time.monotonic() - start < req["timeout"]:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                rc = os.waitstatus_to_exitcode(status)
                break
            time.sleep(0.05)
        if rc is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        print(json.dumps({"rc": rc, "seconds": time.monotonic() - start}), flush=True)


class Worker:
    """A ``--serve`` process bound to one scratch copy of the repository."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        env = dict(os.environ, PYTHONPATH=str(workdir), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1", WEIGHTSCOPE_CACHE_DIR=str(workdir / ".cache"),
                   MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1")
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve", str(workdir)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=workdir)
        assert json.loads(self.proc.stdout.readline())["ready"]

    def pytest(self, args, timeout: float) -> tuple[int | None, float]:
        self.proc.stdin.write(json.dumps({"args": list(args), "timeout": timeout}) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        return answer["rc"], answer["seconds"]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma list of targets (default: all)")
    ap.add_argument("--per-target", type=int, default=25, help="mutants sampled per target (0: all)")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed")
    ap.add_argument("--jobs", type=int, default=2, help="parallel workers (each with its own repo copy)")
    ap.add_argument("--out", default="mutation-results.json", help="where to write the per-mutant results")
    ap.add_argument("--only", metavar="TARGET:N,...", help="run just these mutants (numbers as listed), e.g. "
                    "cache_key:6,24 select:17; sampling is skipped")
    ap.add_argument("--list", action="store_true", help="list the sampled mutants and exit")
    ap.add_argument("--serve", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    names = [t.strip() for t in args.targets.replace("new", ",".join(NEW_TARGETS)).split(",") if t.strip()]
    unknown = [t for t in names if t not in TARGETS]
    if unknown:
        ap.error(f"unknown target(s) {unknown}; choose from {', '.join(TARGETS)}")

    only = {}
    for part in (args.only or "").split():
        name, _, numbers = part.partition(":")
        only[name] = {int(n) for n in numbers.split(",") if n}
    if only:
        names = [n for n in names if n in only]
    plan = []
    for name in names:
        mutants = enumerate_mutants(name)
        total = len(mutants)
        if only:
            mutants = [m for m in mutants if m[0].number in only[name]]
        elif args.per_target and total > args.per_target:
            mutants = sorted(random.Random(f"{args.seed}:{name}").sample(mutants, args.per_target),
                             key=lambda m: m[0].number)
        print(f"{name}: {len(mutants)} of {total} mutants")
        plan.extend(mutants)
    if args.list:
        for m, _ in plan:
            print(f"  {m.target} #{m.number} {m.function} L{m.line}: {m.original!r} -> {m.mutated!r}")
        return 0

    with tempfile.TemporaryDirectory(prefix="ws-mutation-") as tmp:
        dirs = [Path(tmp) / f"w{i}" for i in range(max(1, args.jobs))]
        for d in dirs:
            _copy_repo(d)
        workers = [Worker(d) for d in dirs]
        try:
            # baseline: every selection passes unmutated (this also fills Numba's cache in each copy)
            limits = {}
            for name in names:
                for w in workers:
                    rc, secs = w.pytest(TARGETS[name][2], timeout=1800)
                    if rc != 0:
                        print(f"baseline of {name} fails (exit {rc}); fix the tests first")
                        return 1
                limits[name] = 3 * secs + 30
                print(f"baseline {name}: {secs:.0f} s", flush=True)
            free = list(workers)

            def run(item):
                mutant, text = item
                worker = free.pop()
                path = worker.workdir / TARGETS[mutant.target][0]
                original = path.read_text()
                try:
                    path.write_text(text)
                    rc, mutant.seconds = worker.pytest(TARGETS[mutant.target][2], limits[mutant.target])
                finally:
                    path.write_text(original)
                    free.append(worker)
                if rc is None:
                    mutant.status = "killed (timeout)"
                elif rc != 0:
                    mutant.status = "killed"
                else:
                    equivalent = (mutant.target, mutant.function, mutant.original, mutant.mutated) in EQUIVALENT
                    mutant.status = "equivalent" if equivalent else "survived"
                print(f"  [{mutant.status:>16}] {mutant.target} #{mutant.number} {mutant.function} L{mutant.line}: "
                      f"{mutant.original!r} -> {mutant.mutated!r} ({mutant.seconds:.0f} s)", flush=True)
                return mutant

            start = time.monotonic()
            with ThreadPoolExecutor(len(workers)) as pool:
                done = list(pool.map(run, plan))
        finally:
            for w in workers:
                w.close()
    killed = sum(m.status.startswith("killed") for m in done)
    equivalent = sum(m.status == "equivalent" for m in done)
    survivors = [m for m in done if m.status == "survived"]
    score = killed / max(1, len(done) - equivalent)
    print(f"\n{len(done)} mutants, {killed} killed, {equivalent} equivalent, {len(survivors)} survived: "
          f"score {score:.1%} in {(time.monotonic() - start) / 60:.1f} min")
    for m in survivors:
        print(f"  SURVIVED {m.target} {TARGETS[m.target][0]}:{m.line} {m.function}: {m.original!r} -> {m.mutated!r}")
    Path(args.out).write_text(json.dumps({"seed": args.seed, "per_target": args.per_target, "score": score,
                                          "mutants": [asdict(m) for m in done]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
