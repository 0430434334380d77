"""Trained temporal models (any registered kind) as MLflow models: logged with a signature,
loadable with ``mlflow.pyfunc.load_model``, registrable in the Model Registry, streamable
frame by frame when the model is causal.

- :func:`log_temporal_model` logs one checkpoint as the run's model ``model`` (flavour
  ``python_function``) as **models from code**: the model's code is ``study/pyfunc_code.py``,
  which MLflow executes on load; there is no ``python_model.pkl``, so loading a run's model
  never unpickles anything. The checkpoint is the model's one artifact, read with
  ``torch.load(weights_only=True)`` (tensors and plain containers only), and its SHA-256 is
  stored beside it and checked on load. What the loader trusts: this package's code
  (installed, and the copy of ``pyfunc_code.py`` stored with the model, which imports it),
  and nothing of the artifact store beyond tensors, JSON metadata and that digest.
  The model's metadata also carries the label space (``classes``), the input width, the
  model kind and whether it is causal.
- The pyfunc's ``predict`` takes **one video's frames in order**, shape ``(T, input_dim)``
  (a float32 array or a DataFrame of the same shape), and returns ``(T, C)`` probabilities
  over ``classes``: :meth:`trainables.predictor.FramewisePredictor.predict_video` (causal
  models carry their state from frame to frame, started fresh on each call). For
  frame-at-a-time use open the same model with ``FramewisePredictor.from_mlflow(uri)``.
- What the MLflow UI shows of a logged model: every task's model is named ``model`` (so
  ``runs:/<run id>/model`` finds it), its ``model_type`` is the model kind (``lstm``,
  ``mstcn``), and it carries ``tags`` (the study driver passes the task's ``ks.*`` tags and
  its run name as ``ks.run_name``: what tells 32 models of a study apart) and ``metrics``
  linked to it by MLflow 3's ``model_id`` (logged at the task's last step, MLflow links the
  run's final ``frame_acc``, ``edit``, F1s; :func:`log_model_metrics` adds the gain once it
  is known), which its page lists; the tag ``mlflow.note.content`` is its description.
- Logging goes through ``mlflow.start_run(run_id)``, which sets the run RUNNING; the run
  gets back the status it had (a finished task's run stays FINISHED even when the driver
  is stopped mid-log: MLflow's own context manager would mark it FAILED without a reason).
- :func:`register_model` registers a logged model under a name (a new version per call)
  from its ``models:/<model id>`` (so MLflow does not warn that the run has no artifacts at
  ``model``: MLflow 3 keeps them with the logged model), with a description and tags.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "TemporalPyfunc",
    "log_model_metrics",
    "log_temporal_model",
    "logged_model_id",
    "register_model",
    "using_tracking_uri",
]

#: the run-relative name every logged model has (``runs:/<run id>/model``)
MODEL_NAME = "model"
_ARTIFACT = "checkpoint"
_DIGEST = "checkpoint_sha256"
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
        digest = context.artifacts.get(_DIGEST)
        want = Path(digest).read_text().strip() if digest else None
        if want and _sha256(path) != want:
            raise CheckpointError("the model's checkpoint does not match the digest logged "
                                  "with it (changed after logging)", Path(path))
        self.predictor = FramewisePredictor.from_checkpoint(path)

    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        import numpy as np

        frames = np.asarray(model_input, dtype=np.float32)
        return self.predictor.predict_video(frames)


def log_temporal_model(run_id: str, checkpoint: str | Path,
                       tracking_uri: str | None = None, *,
                       tags: Mapping[str, Any] | None = None,
                       metrics: Mapping[str, float] | None = None, step: int = 0) -> str:
    """Log ``checkpoint`` as ``run_id``'s MLflow model; returns its ``runs:/`` URI.

    ``tags`` become the logged model's tags. The model is logged at ``step``: MLflow links
    the run's metrics of that step to it (the driver passes the task's last iteration, so the
    final accuracy shows on the model's page); ``metrics`` adds others (also on the run).
    Works on a finished or running run (the driver logs it right after the task ends) and
    leaves a finished run with the status it had."""
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
    import tempfile

    tmp = tempfile.TemporaryDirectory()
    digest = Path(tmp.name) / "checkpoint.sha256"
    digest.write_text(_sha256(checkpoint) + "\n")
    with tmp, using_tracking_uri(tracking_uri):
        client = mlflow.MlflowClient()
        before = client.get_run(run_id).info.status
        mlflow.start_run(run_id=run_id, nested=True)
        ok = False
        try:
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME,
                python_model=str(_CODE),  # models from code: no pickle in the model
                # the digest as an artifact, not model_config (MLflow logs that as run params)
                artifacts={_ARTIFACT: str(checkpoint), _DIGEST: str(digest)},
                signature=signature,
                metadata={"classes": list(predictor.classes), "input_dim": d,
                          "feature_mapped": predictor.feature_mapped,
                          "model_kind": predictor.kind, "causal": predictor.causal},
                # the model runs with this package installed; do not let MLflow guess a pip
                # list by importing and timing the model (slow, and wrong for a checkout)
                pip_requirements=[],
                tags={k: str(v) for k, v in (tags or {}).items()} or None,
                model_type=predictor.kind,
                step=step,
            )
            ok = True
        finally:
            # not `with mlflow.start_run(...)`: its exit marks the run FAILED on any exception,
            # Ctrl-C included, so a finished task would read as failed, with no reason
            mlflow.end_run(before if before in ("FINISHED", "FAILED", "KILLED")
                           else "FINISHED" if ok else "FAILED")
        if metrics:
            log_model_metrics(client, run_id, info.model_id, metrics, step)
    return f"runs:/{run_id}/{MODEL_NAME}"


def log_model_metrics(client: Any, run_id: str, model_id: str,
                      metrics: Mapping[str, float], step: int = 0) -> None:
    """Log ``metrics`` on ``run_id`` linked to its logged model ``model_id`` (MLflow 3: the
    model's page lists them). NaN and None are not logged."""
    import math
    import time

    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    items = [Metric(k, float(v), ts, int(step), model_id=model_id)
             for k, v in metrics.items()
             if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if items:
        client.log_batch(run_id, metrics=items)


def logged_model_id(client: Any, run_id: str, name: str = MODEL_NAME) -> str | None:
    """The id of the model ``name`` that ``run_id`` logged (the latest step's when it logged
    several), or None."""
    run = client.get_run(run_id)
    outputs = getattr(run, "outputs", None)
    steps = {o.model_id: o.step for o in (outputs.model_outputs if outputs else [])}
    found = [m for m in (client.get_logged_model(mid) for mid in steps) if m.name == name]
    return max(found, key=lambda m: steps[m.model_id]).model_id if found else None


def register_model(model_uri: str, name: str, tracking_uri: str | None = None, *,
                   description: str | None = None,
                   tags: Mapping[str, Any] | None = None) -> Any:
    """Register ``model_uri`` (``runs:/<run id>/model`` or ``models:/<model id>``) under
    ``name`` (a new version, with ``description`` and ``tags``); returns the ModelVersion.

    A ``runs:/`` URI is resolved to its logged model first and registered from
    ``models:/<model id>``, as MLflow 3 keeps the files there (``mlflow.register_model``
    would find none under the run and warn before doing the same). An unknown run or model
    raises ``MlflowException``."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

    with using_tracking_uri(tracking_uri):
        client = mlflow.MlflowClient()
        run_id, model_id, source = None, None, model_uri
        if model_uri.startswith("runs:/"):
            run_id, _, path = model_uri.removeprefix("runs:/").partition("/")
            model_id = logged_model_id(client, run_id, path or MODEL_NAME)
            if model_id is None:
                raise MlflowException(f"run {run_id} has no logged model {path!r}")
            source = f"models:/{model_id}"
        elif model_uri.startswith("models:/m-"):
            model_id = model_uri.removeprefix("models:/")
            run_id = client.get_logged_model(model_id).source_run_id
        try:
            client.create_registered_model(name)
        except MlflowException as e:
            if e.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
        return client.create_model_version(
            name, source, run_id=run_id, description=description, model_id=model_id,
            tags={k: str(v) for k, v in (tags or {}).items()} or None)
