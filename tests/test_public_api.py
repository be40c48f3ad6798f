"""The public API: what ``import weightscope`` offers, the entry points that explain directions with concepts taking
one ``ConceptExplainer``, and the size rule (no public function over 12 parameters) read from every module."""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import weightscope

PACKAGE = Path(weightscope.__file__).resolve().parent
MAX_PARAMETERS = 12

TOP_LEVEL = {
    "Comparison", "ConceptExplainer", "Edit", "HeadSVD", "Inspection", "LoadedModel", "ModelSpec", "WeightscopeError",
    "apply_edits", "classifier_analysis", "compare_models", "decompose_head", "decompose_model", "describe_model",
    "embed_concepts", "explain", "inspect_model", "load_classifier", "load_model", "load_vocabulary",
    "save_checkpoint", "sing_analysis", "to_joint",
}


def test_the_top_level_api_is_what_it_says_and_every_name_resolves():
    assert set(weightscope.__all__) == TOP_LEVEL
    for name in sorted(TOP_LEVEL):
        assert getattr(weightscope, name) is not None, name
    assert weightscope.__version__
    # the top-level entry points carry the bundled defaults; the analyses themselves take their inputs
    from weightscope import bundled

    assert weightscope.load_model is bundled.load_model and weightscope.inspect_model is bundled.inspect_model


def _public_functions():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if any(part.startswith("_") and part != "__init__.py" for part in rel.parts):
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in tree.body:
            found = [node] if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else []
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                found = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                         and (not n.name.startswith("_") or n.name == "__init__")]
            for fn in found:
                if fn.name.startswith("_") and fn.name != "__init__":
                    continue
                a = fn.args
                names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
                n = len(names) + bool(a.vararg) + bool(a.kwarg) - (names[:1] in (["self"], ["cls"]))
                yield f"{rel}:{fn.name}", n


def test_no_public_function_takes_more_than_12_parameters():
    counted = dict(_public_functions())
    assert len(counted) > 200                              # the walk found the package, not an empty folder
    assert {k: n for k, n in counted.items() if n > MAX_PARAMETERS} == {}


def test_every_entry_point_that_explains_directions_takes_the_explainer():
    from weightscope.analyses import compare, harness, inspection, neurons, select
    from weightscope.analyses.similarity import datafree, run
    from weightscope.analyses.sing import analysis, classifier, semantics

    entry_points = [inspection.inspect_model, neurons.explain_neurons, neurons.explain_qk, select.score_by_query,
                    select.select_by_relevance, analysis.sing_analysis, classifier.classifier_analysis,
                    semantics.explain_subspaces,
                    datafree.datafree_similarity, run.layer_similarity, compare.inspect_for_labels,
                    harness.run_harness]
    for fn in entry_points:
        params = inspect.signature(fn).parameters
        assert "explainer" in params, fn.__qualname__
        for old in ("vocabulary", "method", "lam", "normalize", "cache_dir"):
            assert old not in params, (fn.__qualname__, old)


def test_the_explainer_embeds_once_per_model_and_shares_with_its_defaulted_copies(tmp_path, tiny_model):
    from weightscope.concepts import explainer as ex
    from weightscope.models.load import load_model

    loaded = load_model(tiny_model)
    calls = []
    real = ex.embed_concepts

    def counting(*args, **kwargs):
        calls.append(kwargs["normalize"])
        return real(*args, **kwargs)

    explainer = ex.ConceptExplainer(["red", "blue", "circle"], k=2, cache_dir=tmp_path)
    ex.embed_concepts = counting
    try:
        filled = explainer.with_defaults("general", "l2")
        d1 = filled.dictionary(loaded, progress=False)
        d2 = filled.with_defaults("other", "splice").dictionary(loaded, progress=False)
    finally:
        ex.embed_concepts = real
    assert calls == ["l2"]                    # one embedding for both: the copy shares the cache
    assert filled.vocabulary == ("red", "blue", "circle") and filled.normalize == "l2"
    assert d1 is d2 and d1.shape[0] == 3
    assert ex.ConceptExplainer("general").with_defaults("shapes_world", "l2").vocabulary == "general"
