"""The temporal models: one registry, one contract (torch-free at import).

A temporal model turns per-frame inputs (class scores or any features, ``(B, T, D)``) into
per-frame class scores. Each registered kind brings four things, and nothing else in the
platform names a concrete model:

- its **config** (a :class:`~trainables.job.StrictConfig` with a ``kind`` literal), torch-free,
  so specs, the planner and the search spaces validate without torch;
- :meth:`ModelKind.build`: the network, an ``nn.Module`` satisfying :class:`TemporalNet`;
- its **rules**: :meth:`ModelKind.memory_estimate` (the one formula, used by job validation
  and by the search spaces), :meth:`ModelKind.train_window` (how many frames one training
  sample spans), :meth:`ModelKind.eval_window` (how evaluation feeds a video),
  :meth:`ModelKind.transfer_axes` (which parameter axes are indexed by input features or by
  classes, so weight transfer between label spaces moves exactly those rows/columns),
  :attr:`ModelKind.shape_fields` (what must match for a checkpoint to load);
- flags: ``causal(config)`` (a frame's output never depends on later frames: real-time use,
  frame-at-a-time streaming) and ``packable`` (K same-shape members can be trained as one
  computation, :mod:`trainables.packed_lstm`).

The job (:mod:`trainables.train_job`), the trial, the predictor, the MLflow model, the
estimators and the search spaces all reach a model only through :data:`MODELS`. The one
contract test suite (``tests/test_temporal_contract.py``) runs over every entry.

Adding a model: its network module, its config module (config + :class:`ModelKind` entry),
one line in :data:`MODELS`, and its search space in :mod:`search_spaces`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, Union

from pydantic import Field

from .job import UNION_TAGS, StrictConfig
from .lstm_config import LSTM, LSTMConfig
from .tcn_config import MSTCN_KIND, TCNConfig

if TYPE_CHECKING:
    from torch import Tensor, nn

__all__ = ["DEFAULT_KIND", "MODELS", "ModelConfig", "ModelKind", "TemporalNet", "kind_of"]

#: What an axis of a transferred parameter is indexed by: the input features (moved only when
#: features are class scores mapped into the joint space) or the classes (always moved).
Axis = Literal["features", "classes"]


class TemporalNet(Protocol):
    """What the job, the predictor and the estimators call on a built network."""

    def forward(self, x: Tensor, state: Any = None, mask: Tensor | None = None
                ) -> tuple[Tensor, Any]:
        """``x`` (B, T, D) -> (logits (B, T, C), state). ``state`` continues a sequence
        (None: start fresh); ``mask`` (B, T) bool marks real frames (None: all real)."""
        ...

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        """The training objective on a batch; ``y`` (B, T) with ``-100`` on padded frames."""
        ...

    def representation(self, x: Tensor, state: Any = None, mask: Tensor | None = None
                       ) -> tuple[Tensor, Any]:
        """(B, T, H): the per-frame representation transferability estimators read."""
        ...

    def narrow_state(self, state: Any, n: int) -> Any:
        """The state of the first ``n`` sequences of the batch (evaluation drops videos that
        ended from a batch sorted longest first)."""
        ...

    input_dim: int
    num_classes: int

    def parameters(self) -> Any: ...
    def state_dict(self) -> dict[str, Tensor]: ...


class ModelKind(Protocol):
    """A registered temporal model (see the module docstring)."""

    name: str
    config: type[StrictConfig]
    packable: bool
    #: config fields that fix the network's parameter shapes (a checkpoint must agree)
    shape_fields: tuple[str, ...]
    #: the config field that sets the training window (what a too-long-window error names)
    window_field: str

    def causal(self, config: Any) -> bool: ...

    def build(self, config: Any, input_dim: int, num_classes: int) -> nn.Module: ...

    def memory_estimate(self, config: Any, input_dim: int, num_classes: int,
                        batch_size: int, window: int) -> int:
        """Bytes one training step needs at least (float32), a lower bound."""
        ...

    def train_window(self, config: Any, longest: int) -> int:
        """Frames per training sample, given the longest training video (``longest``)."""
        ...

    def eval_window(self, config: Any) -> tuple[int | None, bool]:
        """How evaluation feeds a video: (frames per chunk, None = the whole video at once;
        whether the state is carried from chunk to chunk)."""
        ...

    def transfer_axes(self, config: Any) -> Mapping[str, tuple[int, Axis]]:
        """Parameter name -> (axis, what indexes it) for weight transfer between spaces."""
        ...


#: The registry: the one list of temporal models. Keys are the configs' ``kind``.
MODELS: dict[str, ModelKind] = {LSTM.name: LSTM, MSTCN_KIND.name: MSTCN_KIND}

#: The model a config without ``kind`` means (the paper's LSTM: existing specs keep working).
DEFAULT_KIND = LSTM.name

#: A model config: a discriminated union over the registry's configs (by ``kind``).
ModelConfig = Annotated[
    Union[tuple(k.config for k in MODELS.values())],  # noqa: UP007 (built from the registry)
    Field(discriminator="kind"),
]


def kind_of(config: Any) -> ModelKind:
    """The registry entry of a model config (or of a config's ``kind`` name)."""
    name = config if isinstance(config, str) else getattr(config, "kind", DEFAULT_KIND)
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model kind {name!r} (known: {', '.join(MODELS)})") from None


def _assert_registry() -> None:
    # the union is built from the registry; a config whose kind literal disagrees with its
    # key would never be selected by the discriminator
    for name, kind in MODELS.items():
        literal = kind.config.model_fields["kind"].default
        if literal != name:
            raise RuntimeError(f"MODELS[{name!r}] has a config of kind {literal!r}")


_assert_registry()
UNION_TAGS.update(MODELS)  # error locations read model.stages, not model.mstcn.stages
del LSTMConfig, TCNConfig  # reached through MODELS
