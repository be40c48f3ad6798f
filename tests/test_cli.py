"""The command line: one dialect, fast --help, early one-line errors (exit 2), inputs never replaced, outputs as a
unit with the umask, and the README's promises (issue 12 kinds 5-7, issue 13 kinds 2, 3, 5, 7)."""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from weightscope import cli
from weightscope.commands import Parser
from weightscope.core.errors import WeightscopeError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "weightscope" / "shapes" / "assets"
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_main(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def one_error_line(rc, err, *needles) -> bool:
    lines = err.strip().splitlines()
    return (rc == 2 and len(lines) == 1 and "Traceback" not in err and lines[0].startswith("weightscope")
            and all(n in lines[0] for n in needles))


def run_cli(args, cwd=REPO, timeout=300, **kwargs):
    return subprocess.run([sys.executable, "-m", "weightscope.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=ENV, timeout=timeout, **kwargs)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WEIGHTSCOPE_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def victim(tiny_model, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "victim.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, str(path))
    return path


# ------------------------------------------------------------------------- issue 13 kind 5: one dialect

def command_parsers() -> dict[str, argparse.ArgumentParser]:
    return cli.subparsers(cli.build_parser())


def reference_options() -> dict[str, argparse.Action]:
    """Every shared option as the helpers define it, on a fresh parser."""
    from weightscope import commands

    p = Parser(prog="reference")
    commands.add_model_arguments(p)
    commands.add_output_argument(p, overwrite=True)
    commands.add_vocab_argument(p)
    commands.add_layer_head_arguments(p)
    commands.add_solver_arguments(p)
    commands.add_quiet_argument(p)
    return {s: a for a in p._actions for s in a.option_strings if s not in ("-h", "--help")}


def signature(action: argparse.Action):
    return (type(action).__name__, tuple(action.option_strings), action.dest, action.nargs, action.type,
            action.const, tuple(action.choices) if action.choices else None)


def canonical(name: str) -> str:
    """An option name reduced to what a synonym shares with it: --n-directions, --vocabulary, --layer -> stem."""
    stem = name.lstrip("-").lower().replace("_", "-")
    stem = re.sub(r"^(n|num|number)-", "", stem)
    stem = {"vocabulary": "vocab", "lam": "lambda", "output": "out", "model": "model"}.get(stem, stem)
    return stem[:-1] if stem.endswith("s") else stem


HEAD_COMMANDS = ("inspect", "edit", "compare")


def test_one_dialect_kind5_same_option_names_in_every_subcommand():
    parsers = command_parsers()
    assert set(parsers) == set(cli.COMMANDS)          # every registered command is checked, new ones too
    ref = reference_options()
    ref_stems = {canonical(s): s for s in ref}
    # distinct on purpose: edit's --direction L:H:I names one direction to edit, --directions N counts them
    different_meaning = {"--direction"}
    for name, p in parsers.items():
        assert p.allow_abbrev is False, name
        assert isinstance(p, Parser), name
        options = {s: a for a in p._actions for s in a.option_strings if s not in ("-h", "--help")}
        for opt, action in options.items():
            if opt in ref:                            # a shared option: defined exactly as the helper does
                assert signature(action) == signature(ref[opt]), (name, opt)
            elif opt not in different_meaning:        # no synonym of a shared option (--vocabulary, --n-directions)
                assert canonical(opt) not in ref_stems, (name, opt, ref_stems.get(canonical(opt)))
        for required in ("--quiet", "--out"):
            assert required in options, (name, required)
        if name in HEAD_COMMANDS:                     # commands that work on a ViT's attention heads
            assert {"--layers", "--heads"} <= set(options), name
        assert "--model" not in options, name         # the model is the positional MODEL (or a spec) everywhere
    assert cli.build_parser().allow_abbrev is False


def test_one_dialect_kind5_same_list_syntax_and_no_prefix_matching(capsys):
    """`--layer 5` is an error with a hint in every command, not --layers 5 (the list syntax itself is the same
    everywhere by the signature check above: one helper, one parse_indices)."""
    required = {"edit": ["--direction", "5:0:0"]}  # a command's own required options, so argparse gets that far
    for name in (*HEAD_COMMANDS, "similarity"):  # every command that takes --layers
        with pytest.raises(SystemExit) as exc:
            cli.main([name, "--layer", "5", "--quiet", *required.get(name, [])])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "did you mean --layers" in err and len(err.strip().splitlines()) == 1


def test_one_dialect_kind5_close_matches(capsys, tmp_path):
    from weightscope.commands import SOLVER_METHODS
    from weightscope.concepts.solvers import METHODS

    assert set(SOLVER_METHODS) == set(METHODS)        # the CLI's choices are the solvers' methods
    # the commands build their parsers from the library's own constants (weightscope.core.defaults: no numpy at --help)
    from weightscope.analyses import compare, depth
    from weightscope.commands import compare as compare_cmd, depth as depth_cmd

    assert compare_cmd.DEFAULTS is compare.DEFAULTS and compare_cmd.SPEC_HELP is compare.SPEC_HELP
    assert (depth_cmd.METHODS, depth_cmd.BUILTIN_CLASSES) == (depth.METHODS, depth.BUILTIN_CLASSES)
    with pytest.raises(SystemExit):
        cli.main(["inspect", "--method", "compp"])
    assert "did you mean comp" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["inspct"])
    assert "did you mean inspect?" in capsys.readouterr().err
    rc, _, err = run_main(["inspect", "--vocab", "genral", "--out", tmp_path / "o"], capsys)
    assert one_error_line(rc, err, "did you mean general?")
    rc, _, err = run_main(["inspect", "bundeld", "--out", tmp_path / "o"], capsys)
    assert one_error_line(rc, err, "unknown model name 'bundeld'", "bundled")
    assert not (tmp_path / "o").exists()


def best_of(n, args) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        proc = run_cli(args, timeout=60)
        times.append(time.perf_counter() - t)
        assert proc.returncode == 0 and "usage:" in proc.stdout
    return min(times)


def test_one_dialect_kind5_help_under_one_second():
    """Measured in a subprocess (best of 3, the machine is shared); torch is not even imported."""
    for args in (["--help"], *([name, "--help"] for name in cli.COMMANDS)):
        assert best_of(3, args) < 1.0, args
    code = "import sys, weightscope.cli as c; c.build_parser(); print(sorted(m for m in ('torch', 'open_clip', " \
           "'numba', 'numpy') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_exit_codes_documented_in_help():
    for args in (["--help"], *([name, "--help"] for name in cli.COMMANDS)):
        text = " ".join(run_cli(args, timeout=60).stdout.split())
        assert "exit status: 0 done; 2 bad input or environment" in text and "1 a bug" in text, args
    readme = " ".join((REPO / "README.md").read_text().split())
    assert "Exit status: 0 done; 2 bad input or environment" in readme and "1 a bug" in readme


# ------------------------------------------------------------------ issue 12 kind 5: inputs never replaced

def test_inputs_get_overwritten_kind5_edit(tiny_name, victim, tmp_path, capsys):
    """The issue's input (--pretrained given a file, --out the same file, --overwrite) and other routes."""
    before, shipped_before = sha(victim), sha(SHIPPED / "shapes-vit-base.safetensors")
    (tmp_path / "link.safetensors").symlink_to(victim)
    os.link(victim, tmp_path / "hard.safetensors")
    vocab = tmp_path / "words.safetensors"          # a vocabulary file, named so that --out could hit it
    vocab.write_text("red\nblue\n")
    vocab_before = sha(vocab)
    cases = [
        ["--pretrained", victim, "--out", victim],
        ["--checkpoint", victim, "--out", victim],
        ["--checkpoint", victim, "--out", tmp_path / "link.safetensors"],
        ["--checkpoint", victim, "--out", tmp_path / "hard.safetensors"],
        ["--checkpoint", victim, "--out", vocab, "--vocab", vocab],
    ]
    for argv in cases:
        rc, _, err = run_main(["edit", tiny_name, *argv, "--direction", "1:0:0", "--overwrite"], capsys)
        assert one_error_line(rc, err, "refusing to write"), (argv, err)
    rc, _, err = run_main(["edit", "--direction", "5:0:0", "--overwrite",
                           "--out", SHIPPED / "shapes-vit-base.safetensors"], capsys)
    assert one_error_line(rc, err, "shipped with weightscope")
    # the record (PATH.json) may not replace the inspection file the edit reads either
    insp = tmp_path / "e.safetensors.json"
    insp.write_text("{}")
    rc, _, err = run_main(["edit", "--concept", "red", "--inspection", insp, "--overwrite",
                           "--out", tmp_path / "e.safetensors"], capsys)
    assert one_error_line(rc, err, "refusing to write", "e.safetensors.json")
    assert sha(victim) == before and sha(vocab) == vocab_before and insp.read_text() == "{}"
    assert sha(SHIPPED / "shapes-vit-base.safetensors") == shipped_before
    assert not (tmp_path / "e.safetensors").exists()


def test_inputs_get_overwritten_kind5_future_command(victim, tmp_path, capsys, monkeypatch):
    """A command added later that forgets to check its outputs still cannot replace what it reads: the CLI
    registers every run's inputs with the writer."""
    import types

    from weightscope import commands
    from weightscope.core.fileio import write_atomic

    def register(sub):
        p = sub.add_parser("careless")
        commands.add_model_arguments(p)
        commands.add_vocab_argument(p)
        commands.add_output_argument(p, kind="file")
        p.set_defaults(func=lambda args: write_atomic(args.out, b"clobbered") and 0)

    monkeypatch.setitem(sys.modules, "weightscope.commands.careless", types.SimpleNamespace(register=register))
    monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, "careless"))
    vocab = tmp_path / "v.txt"
    vocab.write_text("red\n")
    before = sha(victim)
    for argv in (["--checkpoint", victim, "--out", victim], [victim, "--out", victim],
                 ["--vocab", f"colors,{vocab}", "--out", vocab]):
        rc, _, err = run_main(["careless", *argv], capsys)
        assert one_error_line(rc, err, "refusing to write"), (argv, err)
    assert sha(victim) == before and vocab.read_text() == "red\n"
    assert run_main(["careless", "--checkpoint", victim, "--out", tmp_path / "new.bin"], capsys)[0] == 0
    assert (tmp_path / "new.bin").read_bytes() == b"clobbered"


def test_inputs_get_overwritten_kind5_inspect_and_compare(tiny_name, victim, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8), "red").save(images / "a.png")
    img_before = sha(images / "a.png")
    rc, _, err = run_main(["inspect", "--image-mean", images, "--out", images], capsys)
    assert one_error_line(rc, err, "refusing to write", "inside")
    out = tmp_path / "out"
    out.mkdir()
    vocab = out / "report.html"                       # a vocabulary whose name is one of inspect's outputs
    vocab.write_text("red\nblue\n")
    rc, _, err = run_main(["inspect", tiny_name, "--checkpoint", victim, "--vocab", vocab, "--out", out], capsys)
    assert one_error_line(rc, err, "refusing to write", "report.html")
    rc, _, err = run_main(["compare", f"{tiny_name}:{victim}", victim, "--label", "--vocab", vocab, "--out", out],
                          capsys)
    assert one_error_line(rc, err, "refusing to write", "report.html")
    assert sha(images / "a.png") == img_before and vocab.read_text() == "red\nblue\n"
    assert sorted(p.name for p in out.iterdir()) == ["report.html"]


# --------------------------------------------------------- issue 12 kind 6: outputs together, args first

def test_half_written_outputs_kind6_inspect_few_directions(tmp_path, capsys):
    """The issue's input: --directions 2 (fewer than the report's 4): both files, summary and report agree."""
    from weightscope.analyses.inspection import Inspection

    out = tmp_path / "d"
    rc, text, err = run_main(["inspect", "--layers", "5", "--heads", "0", "--directions", "2", "--vocab",
                              "shapes_world", "--out", out, "--quiet"], capsys)
    assert rc == 0, err
    result = Inspection.from_json(out / "inspection.json")
    assert {d.index for d in result[5, 0].directions} == {0, 1} and "w1" in text and "w2" not in text
    html = (out / "report.html").read_text()
    assert "w1+" in html and "w2+" not in html and "r1-" in html
    assert len(result.top_concepts(5, 0, n_directions=4)) <= 2
    assert result.summary(n_directions=10).count(" +: ") == 2


def test_half_written_outputs_kind6_failed_rerun_keeps_previous(tmp_path, capsys, monkeypatch):
    """A rerun that fails while writing (here: the report) leaves the earlier JSON and report untouched; a
    bad argument fails before anything (another member: --k 0, --directions 0)."""
    from weightscope.reports import inspection as report

    out = tmp_path / "d"
    argv = ["inspect", "--layers", "5", "--heads", "0", "--directions", "1", "--vocab", "shapes_world", "--quiet"]
    assert run_main([*argv, "--out", out], capsys)[0] == 0
    before = {p.name: sha(p) for p in out.iterdir()}

    def broken(*args, **kwargs):
        raise RuntimeError("report failed")

    monkeypatch.setattr(report, "write_report", broken)
    with pytest.raises(RuntimeError):
        cli.main([*argv, "--k", "2", "--out", str(out)])
    monkeypatch.undo()
    assert {p.name: sha(p) for p in out.iterdir()} == before
    for bad in (["--k", "0"], ["--directions", "0"], ["--lambda", "nan"]):
        rc, _, err = run_main(["inspect", *bad, "--out", tmp_path / "new"], capsys)
        assert one_error_line(rc, err, bad[0]) and not (tmp_path / "new").exists()


# ------------------------------------------------------------------ issue 12 kind 7: the umask holds

def test_outputs_ignore_umask_kind7_cli(tiny_name, victim, tmp_path, capsys):
    old = os.umask(0o027)
    try:
        out = tmp_path / "o"
        out.mkdir()
        (out / "report.html").write_text("old")
        os.chmod(out / "report.html", 0o644)
        vocab = tmp_path / "v.txt"
        vocab.write_text("red\nblue\ncircle\n")
        rc, _, err = run_main(["inspect", tiny_name, "--checkpoint", victim, "--vocab", vocab, "--k", "2",
                               "--layers", "1", "--out", out, "--quiet"], capsys)
        assert rc == 0, err
        rc, _, err = run_main(["edit", tiny_name, "--checkpoint", victim, "--direction", "1:0:0",
                               "--out", tmp_path / "e.safetensors"], capsys)
        assert rc == 0, err
    finally:
        os.umask(old)
    written = [out / "inspection.json", out / "report.html", tmp_path / "e.safetensors",
               tmp_path / "e.safetensors.json", *(p for p in (tmp_path / "cache").rglob("*") if p.is_file())]
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in written} == {p.name: 0o640 for p in written}


# -------------------------------------------------------- issue 13 kinds 2 and 3: the real cause, early

def test_right_diagnosis_kind2_non_finite_image_mean(tmp_path, capsys):
    for name, values in (("nan.npy", np.full(64, np.nan)), ("inf.npy", np.r_[np.ones(63), np.inf])):
        np.save(tmp_path / name, values)
        rc, _, err = run_main(["inspect", "--image-mean", tmp_path / name, "--out", tmp_path / "o"], capsys)
        assert one_error_line(rc, err, name, "non-finite") and "zero-norm" not in err
    from weightscope import describe_model, load_model, to_joint

    weights = describe_model(load_model())
    with pytest.raises(WeightscopeError, match="non-finite"):   # the library route names it too
        to_joint(weights, np.eye(weights.width)[:2], image_mean=np.full(weights.embed_dim, np.nan))
    assert not (tmp_path / "o").exists()


def test_os_failures_kind3_bad_image_mean_inputs(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (32, 32), "blue").save(folder / "good.png")
    Image.new("RGB", (64, 64), "red").save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(data[: len(data) // 2])          # the truncated image
    rc, _, err = run_main(["inspect", "--image-mean", folder, "--out", tmp_path / "o"], capsys)
    assert one_error_line(rc, err, str(folder / "cut.jpg"))
    (folder / "cut.jpg").write_bytes(b"not an image at all")             # another member: garbage named .jpg
    rc, _, err = run_main(["inspect", "--image-mean", folder, "--out", tmp_path / "o"], capsys)
    assert one_error_line(rc, err, str(folder / "cut.jpg"))
    np.save(tmp_path / "strings.npy", np.array(["a", "b"]))             # the issue's .npy of strings
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))  # pickled objects
    np.save(tmp_path / "matrix.npy", np.ones((3, 4)))                   # not one vector
    for name, needle in (("strings.npy", "<U1"), ("objects.npy", "not a numeric"), ("matrix.npy", "shape")):
        rc, _, err = run_main(["inspect", "--image-mean", tmp_path / name, "--out", tmp_path / "o"], capsys)
        assert one_error_line(rc, err, name, needle), err
    np.save(tmp_path / "short.npy", np.ones(5))                         # wrong width: found before the long work
    rc, _, err = run_main(["inspect", "--image-mean", tmp_path / "short.npy", "--out", tmp_path / "o"], capsys)
    assert one_error_line(rc, err, "5 entries", "joint space has")
    assert not (tmp_path / "o").exists()


def test_os_failures_kind3_out_folders(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for cmd, out, needle in [
        (["inspect"], "/proc/weightscope-out", "cannot create files in /proc"),
        (["inspect"], afile, "is an existing file; it must name a folder"),
        (["compare"], afile, "is an existing file; it must name a folder"),
        (["edit", "--direction", "5:0:0"], tmp_path, "is an existing folder; it must name a file"),
        (["edit", "--direction", "5:0:0"], afile / "e.safetensors", "is a file, not a folder"),
    ]:
        if cmd[0] == "edit" and out == tmp_path:
            out = tmp_path / "dir.safetensors"
            out.mkdir(exist_ok=True)
        t = time.perf_counter()
        rc, _, err = run_main([*cmd, "--out", out], capsys)
        assert one_error_line(rc, err, needle), (cmd, err)
        assert time.perf_counter() - t < 5        # before any model is loaded
    assert afile.read_text() == "x"


def _without_dac_override():
    """In the child, before exec: drop root's right to ignore permission bits (CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH from the bounding set), so a 0555 folder is read-only for it as for anyone."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_os_failures_kind3_read_only_folder(tmp_path):
    """The issue's member: --out under a folder without write permission (as root, run without DAC override)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    try:
        proc = subprocess.run([sys.executable, "-m", "weightscope.cli", "inspect", "--out", str(ro / "out")],
                              capture_output=True, text=True, cwd=REPO, env=ENV, timeout=120,
                              preexec_fn=_without_dac_override if os.geteuid() == 0 else None)
        assert one_error_line(proc.returncode, proc.stderr, str(ro), "permission denied"), proc.stderr
        assert list(ro.iterdir()) == []
    finally:
        os.chmod(ro, 0o755)


def test_os_failures_kind3_full_disk(tmp_path):
    """ulimit -f 20 while saving an edited bundled checkpoint: one line naming the file, exit 2, nothing left."""
    out = tmp_path / "e.safetensors"
    code = ("import resource, signal, sys\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (20 * 1024, 20 * 1024))\n"
            "from weightscope.cli import main\n"
            f"sys.exit(main(['edit', '--direction', '5:0:0', '--out', {str(out)!r}]))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=ENV,
                          timeout=300)
    assert one_error_line(proc.returncode, proc.stderr, "e.safetensors", "file size limit"), proc.stderr
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------- issue 13 kind 7: README's promises

def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)


def test_readme_promises_kind7_commands_need_no_activated_shell():
    install, tests = readme_commands()
    assert "activate" not in install and not re.search(r"(^|&& )(pip|weightscope|python) ", install)
    assert install.endswith(".venv/bin/weightscope inspect") and ".venv/bin/pip install -e" in install
    assert tests == ".venv/bin/python -m pytest -q"


def _stub_repo(tmp_path, main_job: str) -> Path:
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy(REPO / ".ci" / "run", repo / ".ci" / "run")
    (repo / "README.md").write_text(f"# x\n\n## Two commands\n\n```bash\n{main_job}\n```\n\ntext\n\n```bash\n"
                                    "echo tests > ran-tests\n```\n\n```text\nan output, not a command\n```\n\n"
                                    "## Next\n\n```bash\necho never > never\n```\n")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=ci", "-c", "user.email=ci@example.org", "commit", "-qm",
                    "stub"], check=True)
    return repo


def test_readme_promises_kind7_ci_runs_exactly_the_readme_commands(tmp_path):
    """.ci/run runs the two README commands (in a fresh clone: the checkout gets no venv), and a broken main job
    fails CI."""
    log = tmp_path / "log"
    ok = _stub_repo(tmp_path, f"pwd > {log} && echo main > ran-main")
    proc = subprocess.run(["bash", ".ci/run"], cwd=ok, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    copy = Path(log.read_text().strip())
    assert copy != ok and not copy.exists()           # ran in a fresh clone, removed afterwards
    assert not (ok / "ran-main").exists() and "command 2: echo tests" in proc.stdout and "never" not in proc.stdout
    shutil.rmtree(ok)
    broken = _stub_repo(tmp_path, "weightscope-not-installed inspect")
    proc = subprocess.run(["bash", ".ci/run"], cwd=broken, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "command 2" not in proc.stdout
    ci = (REPO / ".ci" / "run").read_text()
    assert "Two commands" in ci and "pytest" not in ci.split("set -euo pipefail", 1)[1]


def test_readme_promises_kind7_default_outputs_ignored_and_notebook_extra():
    for path in ("weightscope-out/report.html", "weightscope-out/inspection.json", "edited.safetensors",
                 "edited.safetensors.json", "notebooks/weightscope-out/notebook-report.html"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0, path
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {re.split(r"[<>=\[ ]", r)[0] for r in extras["notebooks"]}
    assert {"ipykernel", "nbconvert"} <= names
    readme = (REPO / "README.md").read_text()
    assert '.[notebooks]"' in readme and "jupyter nbconvert --to notebook --execute" in readme


def test_readme_promises_kind7_every_theme_has_its_own_colour(tmp_path):
    """21 themes (the issue's count) and 70 (past tab20+b+c): all colours distinct; the report says how a theme
    is chosen."""
    from weightscope.analyses.inspection import Direction, HeadReport, Inspection
    from weightscope.reports.inspection import write_report

    for n in (21, 70):
        heads = {}
        for i in range(n):
            dirs = [Direction(0, "write", sign, [f"concept {i:02d}"], [1.0], 1.0) for sign in (1, -1)]
            heads[i // 7, i % 7] = HeadReport(i // 7, i % 7, [1.0], [], dirs)
        result = Inspection("m", "v", n, {"method": "comp", "k": 1, "lam": 0.3, "joint_mode": "linear",
                                          "image_mean": False, "sides": ["write"]}, heads)
        html = write_report(result, tmp_path / "r.html").read_text()
        # the theme map is an HTML grid (issue 30): one cell per head, its theme's colour as its background
        cells = re.findall(r"<a data-text href='#head-(\d+)-(\d+)'[^>]*style='display:block;background:(#[0-9a-f]{6})'",
                           html)
        assert len(cells) == n and len({c for _, _, c in cells}) == n
    write_report(result, tmp_path / "r.html")
    assert "the concept with the largest sum" in (tmp_path / "r.html").read_text()


@pytest.mark.slow
def test_readme_promises_kind7_notebook_runs_with_jupyter(tmp_path):
    """The README's notebook command (needs the notebooks extra)."""
    pytest.importorskip("nbconvert", reason="install the notebooks extra: pip install -e '.[notebooks]'")
    proc = subprocess.run([str(Path(sys.executable).parent / "jupyter"), "nbconvert", "--to", "notebook",
                           "--execute", "--output-dir", str(tmp_path),
                           str(REPO / "notebooks" / "inspect_bundled.ipynb")],
                          capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "inspect_bundled.ipynb").stat().st_size > 10_000
