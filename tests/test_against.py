"""``arrayrl conformance --against``: other frameworks' estimators in one matrix."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from arrayrl.conformance import EstimatorSpec, against
from arrayrl.conformance.frameworks import Disagreement, Framework, Implementation, framework

from arrayrl.cli import main
from arrayrl.objectives.value import functional

pytest.importorskip("torchrl")

GAE = "generalized_advantage_estimate"


def _gae_without_truncation_bootstrap(gamma, lmbda, value, next_value, reward, done, terminated):
    """A GAE that treats every ``done`` as a termination (CleanRL's convention)."""
    return functional.generalized_advantage_estimate(
        gamma, lmbda, value, next_value, reward, done, done, kernel="reference"
    )


def _fake_framework(disagreements=(), missing=None) -> Framework:
    implementation = Implementation(
        name="fake.gae",
        spec=EstimatorSpec(GAE),
        backend="numpy",
        fn=_gae_without_truncation_bootstrap,
        note="done passed as terminated",
        disagreements=tuple(disagreements),
    )
    return Framework(
        name="fake",
        pip="fake",
        missing=lambda: missing,
        version=lambda: "fake 1.0",
        implementations=lambda: [implementation],
    )


@pytest.fixture
def with_fake(monkeypatch):
    """Make ``framework("fake")`` return the framework put in ``holder[0]``."""
    holder: list[Framework] = []

    def lookup(name: str) -> Framework:
        return holder[0] if name == "fake" else framework(name)

    monkeypatch.setattr(against, "framework", lookup)
    return holder


def test_torchrl_matrix_passes_with_its_recorded_deviations_as_known():
    report = against.run_against(["torchrl"], functions=[GAE])
    assert report.versions == {"torchrl": "torchrl 0.14.1"}
    assert not report.failures
    statuses = {c.status for c in report.cells}
    assert statuses == {"pass", "known"}
    known = [c for c in report.cells if c.status == "known"]
    # TorchRL's float32 discount masks show on float64 inputs only
    assert {c.dtype for c in known} == {"float64"}
    assert {c.disagreement for c in known} == {"torchrl-float32-masks"}
    assert all(c.scaled_error < 1e-6 for c in known)
    assert len(report.cells) == 2 * len([c for c in report.cells if c.dtype == "float64"])


def test_a_wrong_implementation_fails_with_the_checker_explanation(with_fake):
    with_fake.append(_fake_framework())
    report = against.run_against(["fake"])
    failed = report.failures
    assert failed, "done-as-terminated must fail on the cases with truncations"
    assert all("truncation" in c.explanation for c in failed)
    assert {c.case.split(",")[-1] for c in failed} >= {"truncated_only]"}
    assert any(c.status == "pass" for c in report.cells)  # cases without truncation
    text = str(report)
    assert "FAIL fake.gae" in text and "does not bootstrap at truncation" in text


def test_a_recorded_disagreement_turns_its_failures_into_known(with_fake):
    truncation = Disagreement(
        key="fake-no-truncation-bootstrap",
        covers=lambda case: not case.endswith("none_done]"),
        explanation="fake treats truncation as termination",
        upstream="example/fake#1",
    )
    with_fake.append(_fake_framework([truncation]))
    report = against.run_against(["fake"])
    assert not report.failures
    assert {c.disagreement for c in report.cells if c.status == "known"} == {truncation.key}
    markdown = report.to_markdown()
    assert "**fake-no-truncation-bootstrap**" in markdown and "example/fake#1" in markdown
    assert "`fake 1.0`" in markdown and "done passed as terminated" in markdown


def test_a_framework_that_is_not_installed_is_skipped_with_its_reason(with_fake):
    with_fake.append(_fake_framework(missing="fake is not installed (pip install fake)"))
    report = against.run_against(["fake"])
    assert report.cells == [] and report.skipped == {
        "fake": "fake is not installed (pip install fake)"
    }
    assert "skipped fake: fake is not installed" in str(report)


def test_unknown_framework_raises_naming_the_known_ones():
    with pytest.raises(ValueError, match="torchrl, rlax, sb3, cleanrl"):
        against.run_against(["nope"])


def test_cli_writes_markdown_and_json(tmp_path, capsys):
    path = tmp_path / "report.md"
    status = main(["conformance", "--against", "torchrl", "-k", "reward2go", "--report", str(path)])
    assert status == 0
    assert "reward2go" in capsys.readouterr().out
    assert path.read_text().startswith("# Conformance against other frameworks")
    data = json.loads(path.with_suffix(".json").read_text())
    assert data["versions"] == {"torchrl": "torchrl 0.14.1"}
    functions = {c["function"] for c in data["cells"]}
    assert functions == {"reward2go"}
    assert all(np.isfinite(float(c["scaled_error"])) for c in data["cells"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--against", "nope"], "frameworks are torchrl, rlax, sb3, cleanrl"),
        (["--report", "x.md"], "--report goes with --against"),
        (["--against", "torchrl", "-k", "no_such_case"], "matches no estimator case"),
    ],
)
def test_cli_refuses_bad_options(argv, message, capsys):
    assert main(["conformance", *argv]) == 2
    assert message in capsys.readouterr().err


# -- plots: one small PNG per function, linked from the Markdown ---------------------------

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _cell(implementation, function, case, dtype, status, error):
    return against.AgainstCell(
        framework=implementation.split(".")[0],
        implementation=implementation,
        function=function,
        case=case,
        dtype=dtype,
        status=status,
        scaled_error=error,
    )


def _fake_report() -> against.AgainstReport:
    """Two estimators' worth of cells and one loss term's, every status, both dtypes."""
    return against.AgainstReport(
        cells=[
            _cell("torchrl.reward2go", "reward2go", "reward2go[T1]", "float64", "pass", 0.0),
            _cell("torchrl.reward2go", "reward2go", "reward2go[T1]", "float32", "pass", 3e-8),
            _cell("rlax.returns", "reward2go", "reward2go[T1]", "float64", "known", 2e-8),
            _cell("rlax.returns", "reward2go", "reward2go[T9]", "float64", "n/e", float("nan")),
            _cell("sb3.buffer", "reward2go", "reward2go[T9]", "float32", "fail", 0.5),
            _cell("sb3.buffer", "reward2go", "reward2go[T1]", "float64", "error", float("inf")),
            _cell("fake.gae", GAE, f"{GAE}[T1]", "float64", "pass", 1e-12),
            _cell("rlax.ppo", "clipped_surrogate", "clip[a]", "float32", "pass", 1e-6),
        ]
    )


def test_plot_writes_one_small_png_per_function(tmp_path):
    pytest.importorskip("matplotlib")
    report = _fake_report()
    paths = report.plot(tmp_path / "nested" / "plots")
    assert report.functions == ["reward2go", GAE, "clipped_surrogate"]
    assert [p.name for p in paths] == [f"{f}.png" for f in report.functions]
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert len(data) < 40_000
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert (width, height) == (400, 250)  # 4 x 2.5 in at 100 dpi


def test_plot_file_names_are_safe_and_distinct(tmp_path):
    pytest.importorskip("matplotlib")
    report = against.AgainstReport(
        cells=[
            _cell("x.a", "loss a/b", "c", "float64", "pass", 0.0),
            _cell("x.b", "loss a b", "c", "float64", "pass", 0.0),
        ]
    )
    paths = report.plot(tmp_path)
    assert [p.name for p in paths] == ["loss_a_b.png", "loss_a_b_2.png"]
    assert all(p.parent == tmp_path for p in paths)


def test_plot_points_are_floored_scaled_errors_with_tolerance_lines():
    pytest.importorskip("matplotlib")
    from arrayrl.conformance.runner import TOLERANCE
    from matplotlib.figure import Figure

    figure = Figure()
    cells = [c for c in _fake_report().cells if c.function == "reward2go"]
    against._draw(figure, "reward2go", cells)
    (axes,) = figure.axes
    assert axes.get_yscale() == "log"
    points = {
        collection.get_label(): collection.get_offsets().tolist() for collection in axes.collections
    }
    # x: implementation index (float64 left of float32), y: the error, zero/NaN at 1e-17
    assert points["pass"] == [[-0.12, 1e-17], [0.12, 3e-8]]
    assert points["known"] == [[0.88, 2e-8]]
    assert points["n/e"] == [[0.88, 1e-17]]
    assert points["fail"] == [[2.12, 0.5]]
    assert points["error"][0][1] >= 0.5  # infinite: drawn at the top
    lines = {line.get_label(): line.get_ydata()[0] for line in axes.lines}
    assert lines == {"tol float64": TOLERANCE["float64"], "tol float32": TOLERANCE["float32"]}
    assert [t.get_text() for t in axes.get_xticklabels()] == [
        "torchrl",
        "rlax.returns",
        "sb3.buffer",
    ]


def test_plot_without_matplotlib_or_cells_writes_nothing(tmp_path, monkeypatch):
    assert against.AgainstReport().plot(tmp_path / "empty") == []
    assert not (tmp_path / "empty").exists()
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert _fake_report().plot(tmp_path / "none") == []
    assert not (tmp_path / "none").exists()


def test_markdown_links_each_plot_under_its_function():
    report = _fake_report()
    plots = {"reward2go": "my report_plots/reward2go.png", GAE: f"r_plots/{GAE}.png"}
    text = report.to_markdown(plots=plots)
    assert "### reward2go\n\n![reward2go](my%20report_plots/reward2go.png)" in text
    assert f"### {GAE}\n\n![{GAE}](r_plots/{GAE}.png)" in text
    assert "clipped_surrogate](" not in text
    assert "![" not in report.to_markdown()


def test_cli_report_writes_and_links_the_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "report.md"
    status = main(["conformance", "--against", "torchrl", "-k", "reward2go", "--report", str(path)])
    assert status == 0
    assert f"plots written to {tmp_path / 'report_plots'}/" in capsys.readouterr().out
    png = tmp_path / "report_plots" / "reward2go.png"
    assert png.read_bytes().startswith(PNG_MAGIC)
    assert "![reward2go](report_plots/reward2go.png)" in path.read_text()


def test_cli_report_says_why_there_are_no_plots(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    path = tmp_path / "report.md"
    status = main(["conformance", "--against", "torchrl", "-k", "reward2go", "--report", str(path)])
    assert status == 0
    assert "no plots: matplotlib is not installed" in capsys.readouterr().out
    assert not (tmp_path / "report_plots").exists()
    assert "![" not in path.read_text()
