"""A search read back as Optuna users expect, checked against Optuna itself: a tiny search on
a real local Ray with a real MLflow (SQLite) store and Optuna RDB storage (SQLite), then
``search_trials()`` / ``search_summary()`` / ``kitchen-study best --search`` against the
study that ``optuna.load_study`` opens (trials, states, values, params, intermediate
values at the training iteration, the ``mlflow_run_id`` user attribute, the best trial)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from study.query import load_study
from study.spec_data import open_study
from tests.study_data import B, edge_and_search_spec, write_kitchens

ray = pytest.importorskip("ray")
optuna = pytest.importorskip("optuna")


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    write_kitchens(root / "data", kitchens=2)
    storage = f"sqlite:///{root / 'optuna.db'}"
    spec_path = edge_and_search_spec(
        root, name="srch", experiments={"baselines": [], "edges": []},
        search={"num_samples": 4, "max_concurrent": 2, "iterations": 20, "storage": storage})
    loaded = open_study(spec_path)
    from study.runner import run_study

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="WARNING")
    try:
        out = run_study(loaded)
    finally:
        ray.shutdown()
    assert out.status == "FINISHED", out
    return spec_path, loaded, storage


def test_search_trials_equal_what_optuna_reports(searched, capsys):
    spec_path, loaded, storage = searched
    res = load_study(spec_path)
    trials = res.search_trials()
    summary = res.search_summary()
    assert len(summary) == 1
    task_id = f"search:{B}.split1:small:s0"
    name = summary["optuna_study"].iloc[0]
    assert name == f"srch-{loaded.short_hash}-{task_id}"
    st = optuna.load_study(study_name=name, storage=storage)
    ot = {t.number: t for t in st.trials}

    assert sorted(trials["number"]) == sorted(ot) == [0, 1, 2, 3]
    assert set(trials["search_task_id"]) == {task_id}
    assert set(trials["state"]) <= {"COMPLETE", "PRUNED"}
    params_cols = [c for c in trials.columns if c.startswith("params_")]
    assert {c[len("params_"):] for c in params_cols} == set(ot[0].params)
    for row in trials.to_dict("records"):
        t = ot[row["number"]]
        assert row["state"] == t.state.name
        assert t.user_attrs["mlflow_run_id"] == row["run_id"]
        assert {c[len("params_"):]: row[c] for c in params_cols} == pytest.approx(t.params)
        # Optuna's value: the objective when COMPLETE, the last intermediate when PRUNED
        assert row["value"] == pytest.approx(t.value)
        if t.state.name == "COMPLETE":
            assert row["iterations"] == 20
        else:
            assert row["iterations"] < 20
        # intermediate values at the training iteration (eval points 10, 20), not 1, 2
        assert t.intermediate_values and set(t.intermediate_values) <= {10, 20}
        assert row["last_value"] == pytest.approx(
            t.intermediate_values[max(t.intermediate_values)])

    best = summary.iloc[0]
    assert best["best_number"] == st.best_trial.number
    assert best["best_value"] == pytest.approx(st.best_value)
    assert best["best_params"] == pytest.approx(st.best_params)
    assert best["best_run_id"] == st.best_trial.user_attrs["mlflow_run_id"]
    assert (best["trials"], best["complete"] + best["pruned"], best["failed"]) == (4, 4, 0)

    # the search task's run carries the best params and score as its own
    srun = next(r for r in res.records if r.run_id == best["search_run_id"])
    # the validation protocol: Optuna maximised the validation part's frame_acc; the test
    # frame_acc of the chosen trial is only reported
    assert srun.tags["ks.optuna_study"] == name
    assert srun.tags["ks.search_metric"] == "val.frame_acc"
    assert srun.metrics["val.frame_acc"] == pytest.approx(st.best_value)
    assert srun.metrics["best.val.frame_acc"] == pytest.approx(st.best_value)
    best_trial_run = next(r for r in res.records if r.run_id == best["best_run_id"])
    assert srun.metrics["frame_acc"] == pytest.approx(best_trial_run.metrics["frame_acc"])
    for k, v in st.best_params.items():  # the "small" space's names are config keys
        assert srun.params[k] == str(v)
    row = res.results().set_index("task_id").loc[task_id]
    assert row["frame_acc"] == pytest.approx(srun.metrics["frame_acc"])  # no longer NaN

    # and on the command line
    r = CliRunner().invoke(__import__("study.cli", fromlist=["app"]).app,
                           ["best", str(spec_path), "--search"])
    assert r.exit_code == 0, r.output
    assert f"Optuna study {name!r}" in r.stdout
    assert f"best val.frame_acc {st.best_value:.2f}: trial {st.best_trial.number}" in r.stdout


def test_a_tie_goes_to_the_lower_optuna_trial_number_whichever_finishes_first():
    """The search run's best trial is Optuna's ``best_trial`` also when two trials tie and
    the higher-numbered one finished first (concurrent trials finish in any order)."""
    from types import SimpleNamespace

    from study.scheduling import SearchState

    st = optuna.create_study(direction="maximize")
    asked = {f"t{i}": st.ask() for i in range(3)}  # Optuna numbers 0, 1, 2
    # the dict Ray's OptunaSearch keeps its Optuna trials in (what SearchState reads)
    s = SearchState(task=None, searcher=SimpleNamespace(_ot_trials=asked), scheduler=None,
                    metric="frame_acc")
    s.configs = {tid: {"hidden": 16 * (i + 1)} for i, tid in enumerate(asked)}
    s.record("t2", "run2", {"frame_acc": 40.0}, full=True)
    s.record("t1", "run1", {"frame_acc": 40.0}, full=True)  # same value, lower number
    s.record("t0", "run0", {"frame_acc": 39.0}, full=True)
    s.record("t0", "run0", {"frame_acc": 41.0}, full=False)  # stopped early: not a result
    assert s.best == (40.0, "run1") and s.best_number == 1
    assert s.best_config == {"hidden": 32}
    for tid, v in (("t0", 39.0), ("t1", 40.0), ("t2", 40.0)):
        st.tell(asked[tid], v)
    assert st.best_trial.number == s.best_number
