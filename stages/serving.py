"""The model every training run logs to MLflow: a pyfunc that takes what a client has and returns real answers.

    model = mlflow.pyfunc.load_model("runs:/<run id>/model")      # or: mlflow models serve -m runs:/<run id>/model
    model.predict(np.array([[112., 118., ...]]))   # passengers: the last months, in thousands -> the next month
    model.predict(images_uint8)                     # digits: (N, 28, 28) 0-255 -> class and probabilities
    model.predict(pd.DataFrame({"text": ["국민은"]}))  # text: words -> the next words

The preprocessing lives in the kind modules' `serve(model, inputs, spec)`, the same functions the pipeline uses
(scaler, log and differences for series, training mean and std for images, vocabulary for text); `spec` holds
the settings from the task's meta.json, so the logged model needs no file of the DVC pipeline.
Only stages/tracking.py imports this module (and MLflow, when it loads a logged model).
"""
import mlflow.pyfunc

from stages.files import load_checkpoint
from stages.kinds import KINDS
from stages.models import build_model


class ServedModel(mlflow.pyfunc.PythonModel):
    def __init__(self, kind: str, spec: dict):
        self.kind, self.spec = kind, spec  # plain data: pickled with the model

    def load_context(self, context) -> None:
        checkpoint = load_checkpoint(context.artifacts["checkpoint"])
        self.model = build_model(self.kind, checkpoint["model"], checkpoint["config"])
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.eval()

    def predict(self, context, model_input, params=None):
        return KINDS[self.kind].serve(self.model, model_input, self.spec)
