"""The layout of a run's output directory (`--out`) and of its checkpoint directory: one
definition of every file name the steps write and read, free of TensorFlow imports.

    <out>/keras/model.keras            train: the final model, float32
    <out>/training.json                train: facts (data, recipe, history, versions, commit)
    <out>/history.json                 train: per-epoch figures (also beside the checkpoints)
    <out>/training-curve.png           train: loss and accuracy per epoch (likewise)
    <out>/checkpoints/                 train: ckpt-NNNN.keras + state.json (or --checkpoint-dir)
    <out>/tflite/<variant>.tflite      convert
    <out>/evaluation.json              evaluate: Keras and every variant
    <out>/model/                       evaluate: model.tflite + manifest.json (published), and
                                       quality.png, training-curve.png, variant-chart.png
"""

KERAS_MODEL = "keras/model.keras"
TRAINING_FACTS = "training.json"
HISTORY_FILE = "history.json"
TRAINING_CURVE = "training-curve.png"
DEFAULT_CHECKPOINTS = "checkpoints"
STATE_FILE = "state.json"
TFLITE_DIR = "tflite"
EVALUATION_FILE = "evaluation.json"
MODEL_DIR = "model"
QUALITY_SHEET = "quality.png"  # shows dataset photos: never copied into the repository
VARIANT_CHART = "variant-chart.png"
