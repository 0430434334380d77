"""The budgeted transfer graph (study.budget): spec validation, the plan's estimate tasks and
conditional fine-tunes, the release rule (exactly k per target, deterministic ties, skipped
edges reported), the searcher driving it with fake estimates (no Ray started), status /
report / regret tables from run records, and one small real run on local Ray (slow)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from study.budget import (
    NOT_TRAINED,
    TAG_BUDGET,
    TAG_BUDGET_RANK,
    BudgetEdge,
    BudgetGroup,
    budget_decisions,
    budget_estimators,
    choose,
    dry_run_lines,
    regret_table,
)
from study.mlflow_layout import TaskMeta, latest_finished
from study.plan import KINDS, make_plan
from study.spec import SpecError, parse_spec

NAMES = ("a", "b", "c", "d")


def _spec(budget: dict | None = None, names=NAMES[:3], seeds=(0,), **all_pairs):
    ap = {"mode": "transfer", "arrangement": "concat", **all_pairs}
    if budget is not None:
        ap["budget"] = budget
    return parse_spec({
        "name": "b",
        "datasets": {n: {"path": f"/nowhere/{n}.parquet", "splits": [1]} for n in names},
        "experiments": {"iterations": 10, "seeds": list(seeds), "all_pairs": ap},
    })


# -- spec ------------------------------------------------------------------------------------


def test_budget_spec_validation():
    s = _spec({"per_target": 2, "by": "logme"})
    assert s.experiments.all_pairs.budget.per_target == 2
    for bad, where, words in [
        ({"per_target": 0, "by": "logme"}, "budget.per_target", "greater than or equal to 1"),
        ({"per_target": 1, "by": "nope"}, "budget.by", "unknown estimator 'nope'"),
        ({"per_target": 1, "by": "probe"}, "budget.by", "needs a fine-tune 'probe'"),
        ({"per_target": 1, "by": "logme", "extra": 1}, "budget.extra", "unknown key"),
        ({"halving": {"rungs": 3}}, "budget", "successive halving (budget.halving) is not built"),
    ]:
        with pytest.raises(SpecError) as e:
            _spec(bad)
        assert any(where in k and words in m for k, m in e.value.problems), e.value.problems
    with pytest.raises(SpecError) as e:
        _spec({"per_target": 1, "by": "logme"}, mode=["transfer", "joint"])
    assert e.value.problems[0][0] == "experiments.all_pairs.budget"
    assert "transfer only" in e.value.problems[0][1]
    assert "probe" not in budget_estimators() and "logme" in budget_estimators()


def test_budget_enters_the_hash_but_its_absence_does_not():
    plain, with_budget = _spec(), _spec({"per_target": 1, "by": "leep"})
    assert "budget" not in plain.hashed_dict()["experiments"]["all_pairs"]
    assert with_budget.hashed_dict()["experiments"]["all_pairs"]["budget"] == {
        "per_target": 1, "by": "leep"}


# -- plan ------------------------------------------------------------------------------------


def test_plan_has_an_estimate_per_budgeted_edge_and_conditional_finetunes():
    full = make_plan(_spec(seeds=(0, 1)))
    plan = make_plan(_spec({"per_target": 1, "by": "logme"}, seeds=(0, 1)))
    assert KINDS.index("estimate") == KINDS.index("pretrain") + 1
    assert plan.counts() == {"estimate": 12, "finetune": 12, "baseline": 6}
    bp = plan.budget
    assert bp.conditional == {t.id for t in plan.of_kind("finetune")}
    assert len(bp.groups) == 6 and all(len(g.edges) == 2 for g in bp.groups)
    assert bp.max_finetunes() == 6
    for e in (e for g in bp.groups for e in g.edges):
        est, ft = plan[e.estimate], plan[e.finetune]
        assert est.kind == "estimate" and est.deps == ft.deps and est.config == ft.config
        assert est.key and est.key != ft.key
    # the fine-tunes are the full graph's, keys and all: one version reuses the other's
    assert {t.id: t.key for t in full.of_kind("finetune")} == {
        t.id: t.key for t in plan.of_kind("finetune")}
    # estimate tasks train nothing
    assert plan.training_iterations() == full.training_iterations()
    assert full.budget is None and dry_run_lines(full) == []
    assert "only the 1 best by estimate.logme" in dry_run_lines(plan)[0]


def test_an_explicit_edge_is_not_budgeted():
    s = parse_spec({
        "name": "b",
        "datasets": {n: {"path": f"/nowhere/{n}.parquet", "splits": [1]} for n in NAMES[:3]},
        "experiments": {"iterations": 10, "all_pairs": {"budget": {"per_target": 1,
                                                                   "by": "nce"}},
                        "edges": [{"source": "a", "target": "b"}]},
    })
    plan = make_plan(s)
    ft = "finetune:a.split1>b.split1:concat:s0"
    assert ft in plan.ids and ft not in plan.budget.conditional
    assert "estimate:a.split1>b.split1:concat:s0" not in plan.ids
    g = plan.budget.group_of("finetune:c.split1>b.split1:concat:s0")
    assert [e.source for e in g.edges] == ["c"]


# -- the rule ----------------------------------------------------------------------------------


def _group(sources):
    return BudgetGroup("t", "split1", "concat", 0, tuple(
        BudgetEdge(f"estimate:{s}", f"finetune:{s}", s) for s in sources))


def test_choose_exactly_k_by_orientation_with_deterministic_ties():
    g = _group("abcde")
    vals = {"estimate:a": 1.0, "estimate:b": 3.0, "estimate:c": 3.0, "estimate:d": 2.0,
            "estimate:e": None}
    d = choose(g, vals, 2, higher_is_better=True)
    assert d.chosen == {"finetune:b", "finetune:c"}  # the tie at 3.0: both fit
    d = choose(g, vals, 1, higher_is_better=True)
    assert d.chosen == {"finetune:b"}  # tie broken by task id
    assert [e.source for e in d.ranked] == ["b", "c", "d", "a", "e"]
    low = choose(g, vals, 2, higher_is_better=False)  # lower is better: a, d
    assert low.chosen == {"finetune:a", "finetune:d"}
    assert [e.source for e in low.ranked][-1] == "e"  # no value: last either way
    # NaN and inf are "no value"; k larger than the group: all chosen
    d = choose(g, {**vals, "estimate:b": math.nan, "estimate:c": math.inf}, 9, True)
    assert len(d.chosen) == 5 and [e.source for e in d.ranked][-3:] == ["b", "c", "e"]
    # only candidates are ranked
    d = choose(g, vals, 2, True, candidates=["estimate:a", "estimate:e"])
    assert d.chosen == {"finetune:a", "finetune:e"} and len(d.ranked) == 2
    # same inputs, same decision, whatever the order of the values
    assert choose(g, dict(reversed(vals.items())), 2, True).ranked == \
        choose(g, vals, 2, True).ranked
    tags = choose(g, vals, 2, True).tags(g.edges[0], "logme")
    assert tags == {TAG_BUDGET: "skipped", TAG_BUDGET_RANK: "4/5", "ks.budget_by": "logme"}


# -- the searcher, with fake estimates (no Ray started) ----------------------------------------


def _state(plan, logger):
    from study.scheduling import StudyState

    st = StudyState(plan, list(plan), {}, checkpoint_uri=lambda rid: f"file:///ckpt/{rid}",
                    meta={}, faults=None, fault_dir=lambda: Path("/nowhere"))
    st.logger = logger
    return st


def _drain(searcher, st, logger, study_run, values, fail=()):
    """Run the searcher to the end, "finishing" every released task at once (estimate
    tasks log ``estimate.logme`` = ``values[source]``; tasks in ``fail`` fail)."""
    from ray.tune.search import Searcher

    from study.trial import STUDY_KEY

    released = []
    for i in range(1000):
        cfg = searcher.suggest(f"trial{i}")
        if cfg == Searcher.FINISHED:
            return released
        assert cfg is not None, "nothing released but not finished"
        tid = cfg[STUDY_KEY]["task_id"]
        task = st.tasks[tid]
        released.append((tid, cfg))
        if tid in fail:
            st.failed[tid] = "boom"
            continue
        rid = logger.start_task(study_run, TaskMeta.from_task(task))
        if task.kind == "estimate":
            logger.log_metrics(rid, {"estimate.logme": values[task.source]}, step=0)
        logger.end_task(rid)
        st.done[tid] = rid
    raise AssertionError("the searcher never finished")


def test_searcher_releases_exactly_k_per_target_and_reports_the_rest():
    pytest.importorskip("ray")
    from study.scheduling import StudySearcher
    from study.trial import STUDY_KEY
    from tests.memory_logger import InMemoryRunLogger

    plan = make_plan(_spec({"per_target": 2, "by": "logme"}, names=NAMES))
    logger = InMemoryRunLogger()
    study_run = logger.start_study("b", "h" * 64)
    st = _state(plan, logger)
    assert not set(st.pending) & plan.budget.conditional
    values = {"a": 1.0, "b": 5.0, "c": 5.0, "d": -2.0}
    released = _drain(StudySearcher(st), st, logger, study_run, values)
    ids = [t for t, _ in released]
    fts = [t for t in ids if t.startswith("finetune:")]
    # per target: 3 sources, the 2 best by logme (b and c tie at 5.0: both fit, else a)
    want = {"a": {"b", "c"}, "b": {"a", "c"}, "c": {"a", "b"}, "d": {"b", "c"}}
    got: dict[str, set[str]] = {}
    for t in fts:
        task = st.tasks[t]
        got.setdefault(task.target, set()).add(task.source)
    assert got == want and len(fts) == 8
    # every fine-tune comes after every estimate of its group, and re-estimates nothing
    for t, cfg in released:
        if t.startswith("finetune:"):
            g = plan.budget.group_of(t)
            assert all(ids.index(e.estimate) < ids.index(t) for e in g.edges)
            assert cfg[STUDY_KEY].get("estimate") is None
        if t.startswith("estimate:"):
            assert cfg[STUDY_KEY]["estimate_only"] is True
            assert cfg[STUDY_KEY]["estimate"]["source_split"] == "split1"
    skipped = st.budget.skipped
    assert len(skipped) == 4 and not st.skipped and not st.failed
    assert all(why.startswith(NOT_TRAINED) for why in skipped.values())
    assert skipped["finetune:d.split1>a.split1:concat:s0"].startswith(
        f"{NOT_TRAINED}: rank 3/3 by estimate.logme (-2)")
    # the decision is on the estimate runs, which status reads back
    finished = latest_finished(logger.study_runs("b", "h" * 64))
    decided = budget_decisions(plan, finished)
    assert {t for t, d in decided.items() if d == "skipped"} == set(skipped)
    assert {t for t, d in decided.items() if d == "chosen"} == set(fts)
    est = finished["estimate:a.split1>b.split1:concat:s0"]
    assert est.tags[TAG_BUDGET] == "chosen" and est.tags[TAG_BUDGET_RANK] == "2/3"


def test_a_failed_pretrain_takes_its_edges_out_of_the_ranking():
    pytest.importorskip("ray")
    from study.scheduling import StudySearcher
    from tests.memory_logger import InMemoryRunLogger

    spec = parse_spec({
        "name": "b",
        "datasets": {n: {"path": f"/nowhere/{n}.parquet", "splits": [1]} for n in NAMES[:3]},
        "experiments": {"iterations": 10, "pretrain_iterations": 5, "baselines": False,
                        "all_pairs": {"budget": {"per_target": 1, "by": "logme"}}},
    })
    plan = make_plan(spec)
    logger = InMemoryRunLogger()
    study_run = logger.start_study("b", "h" * 64)
    st = _state(plan, logger)
    # a's pre-train fails; b is the best source of every target it may serve
    released = _drain(StudySearcher(st), st, logger, study_run, {"a": 9.0, "b": 1.0, "c": 0.0},
                      fail={"pretrain:a.split1:s0"})
    fts = sorted(t for t, _ in released if t.startswith("finetune:"))
    assert fts == ["finetune:b.split1>a.split1:concat:s0", "finetune:b.split1>c.split1:concat:s0",
                   "finetune:c.split1>b.split1:concat:s0"]
    # a's edges: estimates and fine-tunes skipped as without a budget (not "not trained")
    assert set(st.skipped) == {"estimate:a.split1>b.split1:concat:s0",
                               "estimate:a.split1>c.split1:concat:s0",
                               "finetune:a.split1>b.split1:concat:s0",
                               "finetune:a.split1>c.split1:concat:s0"}
    assert set(st.budget.skipped) == {"finetune:c.split1>a.split1:concat:s0"}


# -- tables: budget, report, regret ------------------------------------------------------------


def _regret_inputs():
    import pandas as pd

    keys = {"target": "t", "target_split": "split1", "arrangement": "concat", "seed": 0}
    choices = pd.DataFrame([{**keys, "source": s, "chosen": s in ("a", "b")} for s in "abc"])
    gains = pd.DataFrame([{**keys, "source": s, "gain": g}
                          for s, g in (("a", 1.0), ("b", 2.0), ("c", 5.0))])
    return choices, gains


def test_regret_table():
    choices, gains = _regret_inputs()
    r = regret_table(choices, gains).iloc[0]
    assert (r["best_source"], r["best_gain"]) == ("c", 5.0)
    assert (r["best_chosen_source"], r["best_chosen_gain"]) == ("b", 2.0)
    assert r["regret"] == 3.0 and not r["hit"] and r["chosen"] == "a,b" and r["edges"] == 3
    choices["chosen"] = choices["source"] == "c"
    r = regret_table(choices, gains).iloc[0]
    assert r["regret"] == 0.0 and r["hit"]


def _full_study():
    """A full study in memory: baselines of t at 50, fine-tunes a/b/c -> t at 51/52/55 with
    logme estimates 3/2/1 (so the estimate ranks them the wrong way round)."""
    from study.query import StudyResults
    from tests.memory_logger import InMemoryRunLogger

    plan = make_plan(_spec(names=("a", "b", "c", "t")))
    logger = InMemoryRunLogger()
    sr = logger.start_study("f", "f" * 64)
    acc = {"a": 51.0, "b": 52.0, "c": 55.0}
    est = {"a": 3.0, "b": 2.0, "c": 1.0}
    for t in plan:
        if t.kind == "baseline" and t.target == "t" or t.kind == "finetune" and t.target == "t":
            rid = logger.start_task(sr, TaskMeta.from_task(t))
            m = {"frame_acc": 50.0} if t.kind == "baseline" else {
                "frame_acc": acc[t.source], "estimate.logme": est[t.source]}
            logger.log_metrics(rid, m, step=10)
            logger.end_task(rid)
    return StudyResults.from_logger(logger, "f")


def test_simulated_budget_regret_on_a_full_study():
    full = _full_study()
    r = full.budget_regret(per_target=1, by="logme")
    row = r.iloc[0]
    assert row["chosen"] == "a" and row["best_source"] == "c"
    assert row["regret"] == pytest.approx(4.0) and not row["hit"]
    assert r.attrs["fine_tunes"] == {"budgeted": 1, "full": 3, "saved": 2}
    r = full.budget_regret(per_target=3, by="logme")
    assert r.iloc[0]["regret"] == 0.0 and r.attrs["fine_tunes"]["saved"] == 0
    with pytest.raises(ValueError, match="per_target and by"):
        full.budget_regret(per_target=1, by="probe")


def test_budget_table_report_and_regret_against_a_full_study():
    from study.budget import report_section
    from study.query import StudyResults
    from tests.memory_logger import InMemoryRunLogger

    plan = make_plan(_spec({"per_target": 1, "by": "logme"}, names=("a", "b", "c", "t")))
    logger = InMemoryRunLogger()
    sr = logger.start_study("f", "b" * 64)
    est = {"a": 3.0, "b": 2.0, "c": 1.0}
    for t in plan:
        if t.target != "t" or t.kind == "finetune" and t.source != "a":
            continue
        rid = logger.start_task(sr, TaskMeta.from_task(t))
        if t.kind == "estimate":
            logger.log_metrics(rid, {"estimate.logme": est[t.source]}, step=0)
            rank = {"a": 1, "b": 2, "c": 3}[t.source]
            logger.set_tags(rid, {TAG_BUDGET: "chosen" if rank == 1 else "skipped",
                                  TAG_BUDGET_RANK: f"{rank}/3", "ks.budget_by": "logme"})
        else:
            logger.log_metrics(rid, {"frame_acc": 50.0 if t.kind == "baseline" else 51.0},
                               step=10)
        logger.end_task(rid)
    budgeted = StudyResults.from_logger(logger, "f")
    tab = budgeted.budget()
    assert list(tab["source"]) == ["a", "b", "c"]
    assert list(tab["decision"]) == ["chosen", "skipped", "skipped"]
    assert list(tab["trained"]) == [True, False, False] and tab["value"].iloc[0] == 51.0
    text = report_section(tab)
    assert "## Budgeted graph" in text and text.count(NOT_TRAINED) == 3  # 2 rows + summary
    # estimate runs are no transfer runs: one pair only, and no NaN gains
    assert len(budgeted.best_transfer_pairs(k=None)) == 1
    r = budgeted.budget_regret(_full_study())
    assert r.iloc[0]["regret"] == pytest.approx(4.0)
    assert r.attrs["fine_tunes"] == {"budgeted": 1, "full": 3, "saved": 2}


# -- one real run on local Ray -------------------------------------------------------------------


@pytest.mark.slow  # a 3-dataset study on local Ray: minutes on a loaded 2-core machine
def test_real_budgeted_run(tmp_path):
    """3 datasets, all pairs, budget 1 per target by LEEP: 3 baselines (= pre-trains),
    6 estimate tasks, 3 fine-tunes trained, 3 estimated, not trained; status and report
    say so; a full version after it trains only the 3 skipped fine-tunes."""
    pytest.importorskip("ray")
    from study.query import load_study
    from study.report import render_markdown
    from study.runner import run_study
    from study.spec_data import open_study
    from study.status import study_status
    from tests.study_data import write_kitchens

    names = sorted(write_kitchens(tmp_path / "data", kitchens=3))

    def spec(budget):
        ap = {"mode": "transfer", "arrangement": "concat"}
        if budget:
            ap["budget"] = {"per_target": 1, "by": "leep"}
        return {"name": "bud", "datasets": {n: {"path": f"data/{n}.parquet", "splits": [1]}
                                            for n in names},
                "model": {"history": 8, "hidden": 8, "batch_size": 4},
                "experiments": {"seeds": [0], "iterations": 10, "all_pairs": ap},
                "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                "storage_path": str(tmp_path / "ray_results")}

    p1, p2 = tmp_path / "budget.yaml", tmp_path / "full.yaml"
    p1.write_text(yaml.safe_dump(spec(True)))
    p2.write_text(yaml.safe_dump(spec(False)))
    loaded = open_study(p1)
    out = run_study(loaded, num_cpus=2, progress=False)
    assert out.status == "FINISHED", out
    kinds = [t.split(":")[0] for t in out.finished]
    assert kinds.count("baseline") == 3 and kinds.count("estimate") == 6
    assert kinds.count("finetune") == 3
    rows = {r["id"]: r for r in study_status(loaded)}
    skipped = [t for t, r in rows.items() if r["status"] == NOT_TRAINED]
    assert len(skipped) == 3 and all(rows[t]["budget"] == "skipped" for t in skipped)
    res = load_study(p1)
    tab = res.budget()
    assert len(tab) == 6 and (tab["decision"] == "chosen").sum() == 3
    assert tab["estimate"].notna().all()
    # the chosen one of each target has the best (highest) LEEP of its two
    for _, g in tab.groupby("target"):
        assert g.loc[g["decision"] == "chosen", "estimate"].iloc[0] == g["estimate"].max()
    assert NOT_TRAINED in render_markdown(res)
    full = run_study(open_study(p2), num_cpus=2, progress=False)
    assert full.status == "FINISHED"
    assert sorted(full.finished) == sorted(skipped)  # the rest is reused by task key
    r = res.budget_regret(load_study(p2))
    assert len(r) == 3 and (r["regret"] >= 0).all()
    assert r.attrs["fine_tunes"] == {"budgeted": 3, "full": 6, "saved": 3}
