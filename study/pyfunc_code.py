"""The MLflow "models from code" entry of a logged temporal model (``study.models``).

MLflow runs this file (stored as the model's code) when ``mlflow.pyfunc.load_model`` opens a
model the study logged, instead of unpickling a ``python_model.pkl``: loading executes this
package's own code and reads the checkpoint with ``torch.load(weights_only=True)``.
"""

from mlflow.models import set_model

from study.models import TemporalPyfunc

set_model(TemporalPyfunc())
