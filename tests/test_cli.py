"""The ``arrayrl`` command line as a user meets it: version, help texts, ``-k`` selection,
the conformance report's skipped backends and deviations, and ``arrayrl train``'s errors,
Ctrl-C and frame rounding. Fast: no test runs the whole conformance suite or a long run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from importlib.metadata import version

import pytest
from arrayrl.conformance import plan, runner
from arrayrl.conformance.runner import Cell

from arrayrl import cli

HELP_COMMANDS = (
    [],
    ["conformance"],
    ["train"],
    ["train", "ppo"],
    ["train", "bc"],
    ["train", "diffusion-bc"],
)


def _forbid_running(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any run of conformance cases fail the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("cases were run")

    monkeypatch.setattr(runner, "run", refuse)
    monkeypatch.setattr(runner, "run_losses", refuse)


def _one_error_line(text: str) -> str:
    """The single line of ``text`` (a one-line error with no traceback)."""
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


# -- version and help ----------------------------------------------------------------------


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"arrayrl {version('arrayrl')}\n"


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=lambda c: " ".join(c) or "arrayrl")
def test_help_has_examples_and_no_rest_markup(command, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([*command, "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text
    assert re.search(r"^  arrayrl \w+", text, re.MULTILINE), text  # an example command
    assert "``" not in text
    assert not re.search(r":(func|class|meth|mod|attr|data):", text), text


# -- conformance: -k -----------------------------------------------------------------------


def test_k_family_is_case_insensitive_and_exact():
    """`-k GAE` selects the GAE cases only (loss cases with a "gae" layout stay out)."""
    cases, loss_cases = cli.select_cases("GAE")
    assert cases and loss_cases == []
    assert {c.function for c in cases} == {"generalized_advantage_estimate"}
    assert cli.select_cases("gae") == (cases, loss_cases)


@pytest.mark.parametrize(
    ("names", "members"),
    [
        (("vtrace", "V-Trace", "v_trace"), {"vtrace_advantage_estimate"}),
        (
            ("tdlambda", "TD-Lambda", "td_lambda"),
            {"td_lambda_return_estimate", "td_lambda_advantage_estimate"},
        ),
        (("td0", "TD0"), {"td0_return_estimate", "td0_advantage_estimate"}),
        (("td1",), {"td1_return_estimate", "td1_advantage_estimate"}),
        (("ppo", "PPO"), {"PPOLoss", "ClipPPOLoss", "KLPENPPOLoss"}),
        (("clipppo", "ClipPPO", "ClipPPOLoss"), {"ClipPPOLoss"}),
        (("klpen", "KL-PEN"), {"KLPENPPOLoss"}),
        (("a2c", "A2C"), {"A2CLoss"}),
        (("reinforce", "Reinforce"), {"ReinforceLoss"}),
        (("td0_return_estimate",), {"td0_return_estimate"}),
    ],
)
def test_k_common_names(names, members):
    for name in names:
        cases, loss_cases = cli.select_cases(name)
        assert {plan.case_subject(c) for c in (*cases, *loss_cases)} == members, name


def test_k_substring_and_several_terms():
    _, tanh = cli.select_cases("TANH_NORMAL")
    assert tanh and all("tanh_normal" in c.name for c in tanh)
    cases, loss_cases = cli.select_cases("gae, A2C")
    assert {c.function for c in cases} == {"generalized_advantage_estimate"}
    assert {c.loss for c in loss_cases} == {"A2CLoss"}


def test_k_matching_nothing_lists_the_families(monkeypatch, capsys):
    _forbid_running(monkeypatch)
    assert cli.main(["conformance", "-k", "no-such-family"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "'no-such-family' matches no case" in line
    for family in ("gae", "vtrace", "tdlambda", "ppo", "a2c", "reinforce"):
        assert family in line


# -- conformance: --json -------------------------------------------------------------------


@pytest.mark.parametrize("where", ["missing_folder", "a_directory", "under_a_file"])
def test_unwritable_json_fails_before_running(where, tmp_path, monkeypatch, capsys):
    _forbid_running(monkeypatch)
    (tmp_path / "file").write_text("")
    path = {
        "missing_folder": tmp_path / "missing" / "report.json",
        "a_directory": tmp_path,
        "under_a_file": tmp_path / "file" / "report.json",
    }[where]
    start = time.perf_counter()
    assert cli.main(["conformance", "--json", str(path)]) == 2
    assert time.perf_counter() - start < 2.0
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("arrayrl conformance: error: cannot write --json")


def test_json_check_leaves_no_file(tmp_path):
    path = tmp_path / "report.json"
    assert cli.json_path_error(str(path)) is None
    assert not path.exists()


# -- conformance: the report ---------------------------------------------------------------


def test_skipped_backends_have_reasons(monkeypatch):
    installed = {"torch", "array_api_strict"}
    monkeypatch.setattr(plan, "_have", lambda module: module in installed)
    monkeypatch.setattr(plan, "_torch_cuda_reason", lambda: "no GPU")
    skipped = plan.skipped_backends(with_torchrl=True)
    assert skipped == {
        "torch-cuda": "no GPU",
        "jax": "not installed",
        "cupy": "not installed",
        "torchrl": "not installed",
    }
    assert plan.skipped_backends(with_torchrl=False)["torchrl"] == "--no-torchrl"
    line = plan.describe_skipped(skipped)
    assert "jax (not installed)" in line and "torch-cuda (no GPU)" in line
    assert "torchrl" not in plan.oracle_line(skipped)


def test_report_names_skipped_and_only_used_deviations(tmp_path, monkeypatch, capsys):
    """Fake cells: one used torchrl-float32-masks; no other deviation may be printed."""
    cells = [
        Cell("generalized_advantage_estimate[x]", "float64", "numpy/numba", 0.0, True),
        Cell("generalized_advantage_estimate[x]", "float64", "torchrl", 1e-8, True,
             "deviation: torchrl-float32-masks", ("torchrl-float32-masks",)),
    ]  # fmt: skip
    monkeypatch.setattr(runner, "run", lambda *args, **kwargs: cells)
    monkeypatch.setattr(plan, "skipped_backends", lambda with_torchrl: {"jax": "not installed"})
    report_path = tmp_path / "report.json"
    assert cli.main(["conformance", "-k", "gae", "--json", str(report_path)]) == 0
    out = capsys.readouterr().out
    assert "skipped: jax (not installed)" in out
    assert "compared with: float64 NumPy reference, torchrl" in out
    assert "torchrl-float32-masks" in out
    for unused in ("torchrl-td1-non-rolling-no-bootstrap", "torchrl-klpen-inplace-beta"):
        assert unused not in out
    report = json.loads(report_path.read_text())
    assert [d["key"] for d in report["deviations"]] == ["torchrl-float32-masks"]
    assert report["skipped"] == {"jax": "not installed"}
    assert report["ran"] == ["numpy/numba", "torchrl"]


def test_deviations_used_only_from_cells():
    assert runner.deviations_used([]) == []
    cell = Cell("KLPENPPOLoss[x]", "float32", "torchrl", 0.0, True, "",
                ("torchrl-klpen-inplace-beta",))  # fmt: skip
    assert [d["key"] for d in runner.deviations_used([cell])] == ["torchrl-klpen-inplace-beta"]


# -- train: errors -------------------------------------------------------------------------

train = pytest.mark.skipif(bool(cli.missing_train_modules()), reason="needs the [train] extra")


@train
@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--env", "NoSuchEnv-v0"], "cannot make Gymnasium env 'NoSuchEnv-v0'"),
        (["--device", "foo"], "unknown torch device 'foo'"),
        (["--device", "meta"], "holds no data"),
    ],
)
def test_train_setting_errors_are_one_line(options, expected, tmp_path, capsys):
    assert cli.main(["train", "ppo", *options, "--out", str(tmp_path)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("arrayrl train ppo: error:") and expected in line


@train
def test_train_unavailable_cuda_is_one_line(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert cli.main(["train", "ppo", "--device", "cuda"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "device 'cuda' is not available here" in line


def test_train_missing_extra_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gymnasium", None)  # makes `import gymnasium` fail
    assert cli.main(["train", "ppo"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "missing" in line and "gymnasium" in line and "pip install 'arrayrl[train]'" in line


@train
def test_train_error_in_a_subprocess_has_no_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "arrayrl.cli", "train", "ppo", "--env", "CartPol-v1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 2
    assert "Did you mean" in _one_error_line(done.stderr)


# -- train: frames, Ctrl-C, periodic writes ------------------------------------------------


class _FakeResult:
    def summary(self) -> str:
        return "fake summary"


@train
@pytest.mark.parametrize(
    ("frames", "note"),
    [
        (1500, "frames: 1,500 rounded down to 1,024 (1 iteration of 8 envs x 128 steps)"),
        (100, "frames: 100 rounded up to 1,024 (1 iteration of 8 envs x 128 steps)"),
        (3000, "frames: 3,000 rounded down to 2,048 (2 iterations of 8 envs x 128 steps)"),
        (2048, None),
    ],
)
def test_frames_rounding_is_reported(frames, note, monkeypatch, capsys):
    import arrayrl.train

    monkeypatch.setattr(arrayrl.train, "train_ppo", lambda config: _FakeResult())
    assert cli.main(["train", "ppo", "--frames", str(frames)]) == 0
    captured = capsys.readouterr()
    assert captured.out == "fake summary\n"
    if note is None:
        assert "rounded" not in captured.err
    else:
        assert captured.err.strip() == f"arrayrl train ppo: {note}"


def _interrupt_on_update(monkeypatch, calls: int, check=None) -> None:
    """Make the ``calls``-th PPO update raise KeyboardInterrupt (after ``check()``)."""
    import arrayrl.train.ppo as ppo

    real, count = ppo._update, [0]

    def update(*args, **kwargs):
        count[0] += 1
        if count[0] == calls:
            if check is not None:
                check()
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ppo, "_update", update)


@train
def test_ctrl_c_writes_the_curve_so_far(tmp_path, monkeypatch, capsys):
    from arrayrl.train import read_curve

    _interrupt_on_update(monkeypatch, calls=2)
    out = tmp_path / "run"
    command = ["train", "ppo", "--frames", "1024", "--num-envs", "2", "--out", str(out)]
    assert cli.main([*command, "--no-progress"]) == 130
    captured = capsys.readouterr()
    assert "interrupted after 256 of 1,024 frames" in captured.out
    assert str(out / "learning_curve.csv") in captured.out
    assert read_curve(out / "learning_curve.csv")["frames"] == [256.0]
    assert (out / "learning_curve.png").is_file()
    assert "Traceback" not in captured.err


@train
def test_curve_is_written_while_training(tmp_path, monkeypatch):
    from arrayrl.train import read_curve

    out = tmp_path / "run"

    def written_after_first_iteration():
        assert read_curve(out / "learning_curve.csv")["frames"] == [256.0]

    _interrupt_on_update(monkeypatch, calls=2, check=written_after_first_iteration)
    command = ["train", "ppo", "--frames", "1024", "--num-envs", "2", "--out", str(out)]
    assert cli.main([*command, "--save-every", "0", "--no-progress"]) == 130
