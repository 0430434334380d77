"""Trained temporal models (any registered kind) as MLflow models: logged with a signature,
loadable with ``mlflow.pyfunc.load_model``, registrable in the Model Registry, streamable
frame by frame when the model is causal.

- :func:`log_temporal_model` logs one checkpoint as the run's model ``model`` (flavour
  ``python_function``) as **models from code**: the model's code is ``study/pyfunc_code.py``,
  which MLflow executes on load; there is no ``python_model.pkl``, so loading a run's model
  never unpickles anything. The checkpoint is the model's one artifact, read with
  ``torch.load(weights_only=True)`` (tensors and plain containers only), and its SHA-256 is
  in the model's metadata and checked on load. What the loader trusts: this package's code
  (installed, and the copy of ``pyfunc_code.py`` stored with the model, which imports it),
  and nothing of the artifact store beyond tensors, JSON metadata and that digest.
  The model's metadata also carries the label space (``classes``), the input width, the
  model kind and whether it is causal.
- The pyfunc's ``predict`` takes **one video's frames in order**, shape ``(T, input_dim)``
  (a float32 array or a DataFrame of the same shape), and returns ``(T, C)`` probabilities
  over ``classes``: :meth:`trainables.predictor.FramewisePredictor.predict_video` (causal
  models carry their state from frame to frame, started fresh on each call). For
  frame-at-a-time use open the same model with ``FramewisePredictor.from_mlflow(uri)``.
- :func:`register_model` registers a logged model under a name (a new version per call).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["MODEL_NAME", "TemporalPyfunc", "log_temporal_model", "register_model",
           "using_tracking_uri"]

#: the run-relative name every logged model has (``runs:/<run id>/model``)
MODEL_NAME = "model"
_ARTIFACT = "checkpoint"
#: the models-from-code file MLflow stores with the model and runs on load
_CODE = Path(__file__).with_name("pyfunc_code.py")

try:  # the class must subclass PythonModel; mlflow is a hard dependency of the study layer
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover - mlflow is installed with the package
    PythonModel = object  # type: ignore[misc,assignment]


@contextlib.contextmanager
def using_tracking_uri(uri: str | None) -> Iterator[None]:
    """MLflow's fluent API (``start_run``, ``register_model``) reads a process-global URI, and
    ``mlflow.set_tracking_uri`` also exports it as ``$MLFLOW_TRACKING_URI``: set it only for the
    call and restore both, so logging a model never changes which store a later study (or the
    user's ``MLFLOW_TRACKING_URI`` rule) resolves to."""
    if uri is None:
        yield
        return
    import mlflow

    env = os.environ.get("MLFLOW_TRACKING_URI")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env


def _sha256(path: str | Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class TemporalPyfunc(PythonModel):
    """The pyfunc face of a trained temporal model (see the module docstring)."""

    # predict() takes one video's frames as an array and our signature says so: MLflow's
    # type-hint validation (which would wrap predict and warn that it has no hints) is off
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        from trainables.job import CheckpointError
        from trainables.predictor import FramewisePredictor

        path = context.artifacts[_ARTIFACT]
        want = (getattr(context, "model_config", None) or {}).get("checkpoint_sha256")
        if want and _sha256(path) != want:
            raise CheckpointError("the model's checkpoint does not match the digest logged "
                                  "with it (changed after logging)", Path(path))
        self.predictor = FramewisePredictor.from_checkpoint(path)

    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        import numpy as np

        frames = np.asarray(model_input, dtype=np.float32)
        return self.predictor.predict_video(frames)


def log_temporal_model(run_id: str, checkpoint: str | Path,
                       tracking_uri: str | None = None) -> str:
    """Log ``checkpoint`` as ``run_id``'s MLflow model; returns its ``runs:/`` URI.

    Works on a finished or running run (the driver logs it right after the task ends)."""
    import mlflow
    import numpy as np
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    from trainables.predictor import FramewisePredictor

    predictor = FramewisePredictor.from_checkpoint(checkpoint)
    d, c = predictor.input_dim, len(predictor.classes)
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, d))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, c))]),
    )
    with using_tracking_uri(tracking_uri), mlflow.start_run(run_id=run_id, nested=True):
        mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            python_model=str(_CODE),  # models from code: no pickle in the model
            artifacts={_ARTIFACT: str(checkpoint)},
            model_config={"checkpoint_sha256": _sha256(checkpoint)},
            signature=signature,
            metadata={"classes": list(predictor.classes), "input_dim": d,
                      "feature_mapped": predictor.feature_mapped,
                      "model_kind": predictor.kind, "causal": predictor.causal},
            # the model runs with this package installed; do not let MLflow guess a pip list
            # by importing and timing the model (slow, and wrong for a local checkout)
            pip_requirements=[],
        )
    return f"runs:/{run_id}/{MODEL_NAME}"


def register_model(model_uri: str, name: str, tracking_uri: str | None = None) -> Any:
    """Register ``model_uri`` under ``name`` (a new version); returns the ModelVersion."""
    import mlflow

    with using_tracking_uri(tracking_uri):
        return mlflow.register_model(model_uri, name)
