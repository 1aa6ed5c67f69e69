"""The model every training run logs to MLflow: a pyfunc that takes what a client has and returns real answers.

    model = mlflow.pyfunc.load_model("runs:/<run id>/model")      # or: mlflow models serve -m runs:/<run id>/model
    model.predict(np.array([[112., 118., ...]]))   # passengers: the last months, in thousands -> the next month
    model.predict(images_uint8)                     # digits: (N, 28, 28) 0-255 -> class and probabilities
    model.predict(pd.DataFrame({"text": ["국민은"]}))  # text: words -> the next words

The preprocessing lives in the kind's `serve(model, inputs, spec)` (stages/kinds/<kind>/predict.py), the same functions
the pipeline uses (scaler, log and differences for series, training mean and std for images, vocabulary for
text); `spec` holds the settings from the task's meta.json, so the logged model needs no file of the DVC pipeline.
Train builds one per model and hands it to stages/infra/tracking.py, which logs it with the checkpoint.
"""
import mlflow.pyfunc

from stages import kinds


class ServedModel(mlflow.pyfunc.PythonModel):
    def __init__(self, kind: str, spec: dict):
        self.kind, self.spec = kind, spec  # plain data: pickled with the model

    def load_context(self, context) -> None:
        from stages.core.inference import load_model

        self.model, checkpoint = load_model(context.artifacts["checkpoint"], self.kind)
        if self.spec.get("ensemble") and "seed_state_dicts" in checkpoint:  # serve what the headline reports
            from stages.core.models import SeedEnsemble

            self.model = SeedEnsemble([load_model(context.artifacts["checkpoint"], self.kind, state_dict=state)[0]
                                       for state in checkpoint["seed_state_dicts"]]).eval()

    def serve(self, model, inputs):
        """`model`'s answers to real inputs: what predict returns once the logged checkpoint is loaded."""
        return kinds.code(self.kind, "predict").serve(model, inputs, self.spec)

    def predict(self, context, model_input, params=None):
        try:
            return self.serve(self.model, model_input)
        except ValueError as err:  # a request serve() refuses: MLflow's own error puts the reason first (HTTP 400)
            from mlflow.exceptions import MlflowException

            raise MlflowException.invalid_parameter_value(str(err)) from None
