"""The shipped models' names, written once: help texts, checks and the artifact loader read them here.

Imports nothing, so that ``--help`` and the config module can name the models without loading the model stack.
"""

# Models shipped in the package (``fer_ray/assets/<name>``), loadable by name wherever an artifact
# path is accepted; ``default`` names DEFAULT_MODEL.
SHIPPED_NAMES = ("ae_cnn_attn", "cnn_attn")
# What scoring, Serve and evaluation use without --model: the shipped model with the better PublicTest
# accuracy (issue #9's rule; docs/RESULTS.md has the figures). Switching it is this one line.
DEFAULT_MODEL = "ae_cnn_attn"
# The names a user may type, as help texts and error messages list them.
SHIPPED = ", ".join(("default", *SHIPPED_NAMES))

# What --model accepts in every job that uses a trained model (fer_ray.inference.artifact.resolve_model).
MODEL_HELP = (
    "model artifact: a directory holding artifact.json (jobs/train.py writes runs/<name>/artifact), "
    f"s3://..., or a shipped model: {SHIPPED}"
)
