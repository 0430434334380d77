"""Search spaces: define-by-run functions that only call trial.suggest_*, within budget."""

from __future__ import annotations

import optuna
import pytest

from search_spaces import SPACE_MODELS, SPACES, get_space
from search_spaces.lstm import PAPER_CONFIG, lstm, lstm_joint, paper, small
from search_spaces.mstcn import mstcn
from trainables.lstm_config import LSTM
from trainables.tcn_config import MSTCN_KIND
from trainables.temporal import MODELS
from trainables.train_config import TrainConfig

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_paper_space_is_the_papers_config():
    cfg = paper(optuna.trial.FixedTrial({}))
    assert cfg == {"history": 300, "depth": 1, "hidden": 128, "batch_size": 128, "lr": 1e-3}
    assert cfg == PAPER_CONFIG and cfg is not PAPER_CONFIG


def _need(cfg: dict, classes: int = 48) -> int:
    """The job's own memory estimate of a space's flat config (the one formula)."""
    c = TrainConfig.parse(cfg)
    window = c.model.history if c.model.kind == "lstm" else 2048
    return MODELS[c.model.kind].memory_estimate(c.model, classes, classes, c.batch_size, window)


def test_fixed_trial_gives_those_values():
    t = optuna.trial.FixedTrial(
        {"history": 300, "depth": 2, "hidden": 64, "batch_size": 32, "lr": 0.002}
    )
    assert lstm(t) == {"history": 300, "depth": 2, "hidden": 64, "batch_size": 32, "lr": 0.002}


def test_joint_space_maps_eighths_to_a_ratio():
    t = optuna.trial.FixedTrial({"history": 100, "depth": 1, "hidden": 32, "batch_size": 16,
                                 "lr": 1e-3, "target_eighths": 5, "arrangement": "concat"})
    cfg = lstm_joint(t)
    assert cfg["joint_ratio"] == [5, 3] and cfg["arrangement"] == "concat"


def test_memory_constraint_bounds_later_suggestions():
    # long history and depth: what is left bounds hidden and batch
    budget = 64.0
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_deep_long = False
    for _ in range(300):
        trial = study.ask()
        cfg = lstm(trial, memory_budget_mb=budget)
        assert _need(cfg) <= budget * 2**20  # the job's own formula
        # the hidden range offered is the largest that fits at the smallest batch: one more
        # step would not (dynamic bound)
        dist = trial.distributions["hidden"]
        over = {**cfg, "hidden": dist.high + 16, "batch_size": 8}
        assert dist.high == 512 or _need(over) > budget * 2**20
        seen_deep_long |= cfg["history"] > 500 and cfg["depth"] == 3
        study.tell(trial, 0.0)
    assert seen_deep_long


def test_budget_too_small_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot fit"):
        lstm(optuna.trial.FixedTrial({}), memory_budget_mb=0.001)


def test_spaces_only_call_suggest():
    class Recorder:
        def __init__(self):
            self.calls = []

        def __getattr__(self, name):
            assert name.startswith("suggest_"), name
            inner = getattr(optuna.trial.FixedTrial(_VALUES), name)

            def call(*a, **k):
                self.calls.append(name)
                return inner(*a, **k)

            return call

    for name, fn in SPACES.items():
        rec = Recorder()
        out = fn(rec)
        assert isinstance(out, dict) and out, name
        assert name == "paper" or rec.calls


_VALUES = {"history": 64, "depth": 1, "hidden": 32, "batch_size": 16, "lr": 3e-3,
           "target_eighths": 4, "arrangement": "merged", "stages": 2, "layers": 4, "maps": 16,
           "smooth_weight": 0.15}


def test_every_space_gives_valid_configs_of_its_model():
    assert set(SPACE_MODELS.values()) <= set(MODELS)
    for name, fn in SPACES.items():
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(5):
            t = study.ask()
            out = fn(t)
            out.pop("arrangement", None)  # a joint space also picks the job's arrangement
            cfg = TrainConfig.parse(out)
            assert cfg.model.kind == SPACE_MODELS[name], name
            study.tell(t, 0.0)


def test_tcn_space_stays_within_its_memory_budget():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(50):
        t = study.ask()
        cfg = mstcn(t, memory_budget_mb=300.0)
        assert _need({**cfg, "batch_size": 1}) <= 300 * 2**20
        study.tell(t, 0.0)
    paper_tcn = MSTCN_KIND.config()  # 4 x 10 x 64 fits the default budget at 2048 frames
    assert MSTCN_KIND.memory_estimate(paper_tcn, 48, 48, 1, 2048) <= 2048 * 2**20
    assert LSTM.memory_estimate(LSTM.config(), 48, 48, 128, 300) <= 512 * 2**20


def test_small_space_is_small():
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=1))
    for _ in range(30):
        t = study.ask()
        cfg = small(t)
        assert 16 <= cfg["history"] <= 128 and cfg["depth"] == 1
        assert cfg["hidden"] <= 64 and cfg["batch_size"] <= 32
        study.tell(t, cfg["lr"])


def test_get_space_binds_options_and_configs_are_valid():
    from trainables.train_config import TrainConfig

    fn = get_space("lstm", max_depth=1, max_history=64)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    for _ in range(10):
        t = study.ask()
        cfg = fn(t)
        assert cfg["depth"] == 1 and cfg["history"] <= 64
        TrainConfig.model_validate(cfg)
        study.tell(t, 1.0)
    with pytest.raises(KeyError, match="unknown search space"):
        get_space("nope")


def test_seeded_tpe_is_deterministic():
    def draw():
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=7))
        out = []
        for i in range(12):
            t = study.ask()
            out.append(lstm_joint(t))
            study.tell(t, float(i % 3))
        return out

    assert draw() == draw()
