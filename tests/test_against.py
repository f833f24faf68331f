"""``arrayrl conformance --against``: other frameworks' estimators in one matrix."""

from __future__ import annotations

import json

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
