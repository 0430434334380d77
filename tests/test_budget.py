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
def test_real_budgeted_run(tmp_path, local_ray):  # one Ray for the module's studies
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


# -- successive halving (study.halving) ------------------------------------------------------


def _hspec(halving: dict | None = None, eval_at=(2, 4, 8), names=NAMES[:3], extra=None,
           **all_pairs):
    ap = {"mode": "transfer", "arrangement": "concat", **all_pairs,
          "budget": {"halving": halving or {"min_iterations": 2}, **(extra or {})}}
    return parse_spec({
        "name": "h",
        "datasets": {n: {"path": f"/nowhere/{n}.parquet", "splits": [1]} for n in names},
        "experiments": {"iterations": 10, "eval_at": list(eval_at), "all_pairs": ap},
    })


def test_halving_spec_validation():
    from study.halving import rungs

    s = _hspec()
    b = s.experiments.all_pairs.budget
    assert b.per_target is None and b.halving.reduction_factor == 2
    assert rungs(b.halving, 10) == (2, 4, 8)
    assert s.hashed_dict()["experiments"]["all_pairs"]["budget"] == {
        "halving": {"min_iterations": 2, "reduction_factor": 2}}
    assert rungs(_hspec({"min_iterations": 1, "reduction_factor": 3},
                        eval_at=(1, 3, 9)).experiments.all_pairs.budget.halving, 10) == (1, 3, 9)
    for kw, where, words in [
        ({"halving": {"min_iterations": 2, "reduction_factor": 1}},
         "budget.halving.reduction_factor", "greater than or equal to 2"),
        ({"halving": {"min_iterations": 0}}, "budget.halving.min_iterations", "greater than 0"),
        ({"halving": {"min_iterations": 2, "rungs": 3}}, "budget.halving.rungs", "unknown key"),
        ({"extra": {"per_target": 1, "by": "logme"}}, "budget", "mutually exclusive"),
        ({"extra": {"by": "logme"}}, "budget", "mutually exclusive"),
        ({"eval_at": (2, 8)}, "experiments.eval_at", "missing: 4"),
        ({"halving": {"min_iterations": 10}, "eval_at": ()},
         "budget.halving.min_iterations", "no rung to halve at"),
        ({"mode": ["transfer", "joint"]}, "experiments.all_pairs.budget", "transfer only"),
    ]:
        with pytest.raises(SpecError) as e:
            _hspec(**kw)
        assert any(where in k and words in m for k, m in e.value.problems), e.value.problems


def test_halving_plan_groups_every_all_pairs_finetune_and_adds_no_task():
    full = make_plan(_spec(names=NAMES))
    plan = make_plan(_hspec(names=NAMES))
    assert plan.budget is None and [t.id for t in plan] == [t.id for t in full]
    fts = {t.id for t in plan if t.kind == "finetune"}
    assert plan.halving.members == fts and plan.halving.rungs == (2, 4, 8)
    assert len(plan.halving.groups) == 4 and all(len(g.edges) == 3 for g in plan.halving.groups)
    lines = dry_run_lines(plan)
    assert "successive halving over 12 fine-tune(s) in 4 group(s)" in lines[0]
    assert "at iterations 2, 4, 8" in lines[0]
    assert sum(ft in "\n".join(lines) for ft in fts) == 12
    # an explicit edge runs in full
    s = parse_spec({**_hspec().model_dump(mode="json", exclude={"source"}),
                    "experiments": {**_hspec().model_dump(mode="json")["experiments"],
                                    "edges": [{"source": "a", "target": "b",
                                               "arrangement": "concat"}]}})
    p = make_plan(s)
    assert "finetune:a.split1>b.split1:concat:s0" not in p.halving.members
    assert len(p.halving.members) == 5


def _book(sources, rungs=(2, 4, 8), eta=2):
    from study.halving import HalvingBook, HalvingPlan

    g = BudgetGroup("t", "split1", "concat", 0,
                    tuple(BudgetEdge("", f"finetune:{s}>t", s) for s in sources))
    return HalvingBook(HalvingPlan(rungs, eta, (g,)))


def test_halving_rule_keeps_exactly_the_better_half_at_each_rung():
    book = _book("abcd")
    ft = {s: f"finetune:{s}>t" for s in "abcd"}
    for s, v in {"a": 10, "b": 40, "c": 30}.items():
        book.observe(ft[s], {"iteration": 2, "frame_acc": v})
        assert book.decide() == []  # d has not reported rung 2 yet: nothing is decided
    book.observe(ft["c"], {"iteration": 4, "frame_acc": 99})  # ahead: rung 4 waits for rung 2
    assert book.decide() == []
    book.observe(ft["d"], {"iteration": 2, "frame_acc": 20})
    # rung 2: b (40) and c (30) continue, a and d stop; rung 4 waits for b
    assert sorted(book.decide()) == [(ft["a"], 2), (ft["d"], 2)]
    book.observe(ft["a"], {"iteration": 4, "frame_acc": 100})  # a halved member: ignored
    assert book.decide() == []
    book.observe(ft["b"], {"iteration": 4, "frame_acc": 20})
    assert book.decide() == [(ft["b"], 4)]  # c (99) beats b (20)
    assert book.decided[("t.split1 concat s0", 2)] == (ft["b"], ft["c"])
    assert book.decided[("t.split1 concat s0", 4)] == (ft["c"],)
    assert book.halved == {ft["a"]: 2, ft["d"]: 2, ft["b"]: 4}
    assert [book.stop(ft[s]) for s in "abcd"] == [True, True, False, True]
    # a group of 1 always continues
    book.observe("finetune:c>t", {"iteration": 8, "frame_acc": 1.0})
    assert book.decide() == [] and not book.stop("finetune:c>t")
    assert book.decided[("t.split1 concat s0", 8)] == ("finetune:c>t",)


def test_halving_ties_by_source_name_missing_values_last_and_gone_members():
    book = _book("dcba", rungs=(2,))
    for s in "dcba":
        v = math.nan if s == "a" else 50.0
        book.observe(f"finetune:{s}>t", {"curve": {"2": v, "10": 1.0}})  # the curve counts
    assert sorted(book.decide()) == [("finetune:a>t", 2), ("finetune:d>t", 2)]  # b, c stay
    # eta 3 keeps ceil(n/3); a member that failed before its rung is not waited for
    book = _book("abcde", rungs=(2,), eta=3)
    for s in "abcd":
        book.observe(f"finetune:{s}>t", {"iteration": 2, "frame_acc": ord(s)})
    assert book.decide() == []
    book.drop("finetune:e>t")
    assert {t for t, _ in book.decide()} == {"finetune:a>t", "finetune:b>t"}
    # a lone member continues
    lone = _book("a", rungs=(2,))
    lone.observe("finetune:a>t", {"iteration": 2, "frame_acc": 0.0})
    assert lone.decide() == [] and not lone.stop("finetune:a>t")


def test_scheduler_stops_a_halved_finetune_and_tags_it():
    pytest.importorskip("ray")
    from ray.tune.schedulers import TrialScheduler

    from study.halving import HALVED, halved_rung
    from study.scheduling import StudyScheduler
    from tests.memory_logger import InMemoryRunLogger

    plan = make_plan(_hspec(halving={"min_iterations": 4}, eval_at=(4, 8), names=NAMES[:3]))
    logger = InMemoryRunLogger()
    sr = logger.start_study("h", "h" * 64)
    st = _state(plan, logger)
    sched = StudyScheduler(st)
    g = next(g for g in plan.halving.groups if g.target == "c")  # sources a, b
    a, b = (e.finetune for e in g.edges)

    class T:
        def __init__(self, tid):
            self.trial_id = tid

    st.trial_task.update({"ta": a, "tb": b})
    assert sched.on_trial_result(None, T("ta"), {"iteration": 4, "frame_acc": 10.0}) \
        == TrialScheduler.CONTINUE  # b has not reported rung 4 yet
    assert sched.on_trial_result(None, T("tb"), {"iteration": 4, "frame_acc": 30.0}) \
        == TrialScheduler.CONTINUE
    assert sched.on_trial_result(None, T("ta"), {"iteration": 8, "frame_acc": 12.0}) \
        == TrialScheduler.STOP
    # a baseline is never halved
    st.trial_task["tx"] = next(t.id for t in plan if t.kind == "baseline")
    assert sched.on_trial_result(None, T("tx"), {"iteration": 4, "frame_acc": 0.0}) \
        == TrialScheduler.CONTINUE
    # a member that finished before its rung was decided is tagged when it is
    g2 = next(g for g in plan.halving.groups if g.target == "a")  # sources b, c
    b2, c2 = (e.finetune for e in g2.edges)
    rid = logger.start_task(sr, TaskMeta.from_task(st.tasks[b2]))
    logger.set_tags(rid, {"mlflow.runName": "b → a"})
    logger.end_task(rid)
    st.trial_task.update({"tb2": b2, "tc2": c2})
    sched.on_trial_complete(None, T("tb2"), {"iteration": 10, "frame_acc": 5.0,
                                            "curve": {"4": 5.0, "8": 5.0, "10": 5.0}})
    st.done[b2] = rid
    assert sched.on_trial_result(None, T("tc2"), {"iteration": 4, "frame_acc": 9.0}) \
        == TrialScheduler.CONTINUE
    tags = logger.get_run(rid).tags
    assert tags["ks.budget"] == f"{HALVED}4" and halved_rung(tags) == 4
    assert tags["mlflow.runName"] == "b → a · stopped @ 10"


def _halving_study():
    """A halving study in memory: baselines of t at 50, fine-tunes a/b/c -> t; a and b
    were halved (at 4 and 2), c survived at 55."""
    from study.halving import HALVED, HALVING
    from study.query import StudyResults
    from tests.memory_logger import InMemoryRunLogger

    plan = make_plan(_hspec(names=("a", "b", "c", "t")))
    logger = InMemoryRunLogger()
    sr = logger.start_study("f", "c" * 64)
    halved = {"a": 4, "b": 2}
    acc = {"a": 60.0, "b": 70.0, "c": 55.0}  # halved runs' last values: not measurements
    for t in plan:
        if t.target != "t" or t.kind not in ("baseline", "finetune"):
            continue
        rid = logger.start_task(sr, TaskMeta.from_task(t))
        if t.kind == "baseline":
            logger.log_metrics(rid, {"frame_acc": 50.0}, step=10)
        else:
            logger.log_metrics(rid, {"frame_acc": acc[t.source]}, step=10)
            tags = {"ks.budget_by": HALVING}
            if t.source in halved:
                tags["ks.budget"] = f"{HALVED}{halved[t.source]}"
            logger.set_tags(rid, tags)
        logger.end_task(rid)
    return StudyResults.from_logger(logger, "f")


def test_query_leaves_halved_finetunes_out_of_the_measured_results():
    from study.budget import report_section

    res = _halving_study()
    g = res.gains()
    assert list(g["source"]) == ["c"] and g["gain"].iloc[0] == pytest.approx(5.0)
    assert list(res.transfer_matrix().index) == ["c"]
    assert list(res.best_transfer_pairs(k=None)["source"]) == ["c"]
    tab = res.budget()
    assert list(tab["decision"]) == ["stopped at 4", "stopped at 2", "chosen"]
    assert list(tab["trained"]) == [False, False, True] and tab["value"].isna().sum() == 2
    text = report_section(tab)
    assert "1 fine-tune(s) survived every rung, 2 stopped early" in text
    assert "| stopped at 2 |" in text
    r = res.budget_regret(_full_study())  # full: a/b/c at 51/52/55, c best
    assert r.iloc[0]["chosen"] == "c" and r.iloc[0]["regret"] == 0.0 and r.iloc[0]["hit"]
    assert r.attrs["fine_tunes"] == {"budgeted": 1, "full": 3, "saved": 2}


@pytest.mark.slow  # a 3-dataset study on local Ray: minutes on a loaded 2-core machine
def test_real_halving_run(tmp_path, local_ray):
    """3 datasets, all pairs, halving from rung 2: each target has 2 sources, so at rung 2
    one continues and one stops; the stopped ones are FINISHED runs tagged ``halved @ 2``,
    named ``· stopped @``, and left out of the gains."""
    pytest.importorskip("ray")
    from study.halving import HALVED, halved_rung
    from study.query import load_study
    from study.runner import run_study
    from study.spec_data import open_study
    from tests.study_data import write_kitchens

    names = sorted(write_kitchens(tmp_path / "data", kitchens=3))
    spec = {"name": "halve", "datasets": {n: {"path": f"data/{n}.parquet", "splits": [1]}
                                          for n in names},
            "model": {"history": 8, "hidden": 8, "batch_size": 4},
            "experiments": {"seeds": [0], "iterations": 10, "eval_at": [2, 4, 8],
                            "all_pairs": {"mode": "transfer", "arrangement": "concat",
                                          "budget": {"halving": {"min_iterations": 2}}}},
            "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "storage_path": str(tmp_path / "ray_results")}
    p = tmp_path / "halve.yaml"
    p.write_text(yaml.safe_dump(spec))
    out = run_study(open_study(p), num_cpus=2, progress=False)
    assert out.status == "FINISHED", out
    kinds = [t.split(":")[0] for t in out.finished]
    assert kinds.count("baseline") == 3 and kinds.count("finetune") == 6
    res = load_study(p)
    fts = [r for r in latest_finished(res.records).values() if r.task_id.startswith("finetune:")]
    halved = [r for r in fts if halved_rung(r.tags) is not None]
    assert len(halved) == 3 and all(r.tags[TAG_BUDGET] == f"{HALVED}2" for r in halved)
    assert all("· stopped @ " in r.tags["mlflow.runName"] for r in halved)
    # one survivor per target; the gains are exactly the survivors'
    tab = res.budget()
    assert sorted(tab["decision"]) == ["chosen"] * 3 + ["stopped at 2"] * 3
    assert sorted(res.gains()["source"] + ">" + res.gains()["target"]) == sorted(
        r["source"] + ">" + r["target"] for _, r in tab[tab["decision"] == "chosen"].iterrows())
