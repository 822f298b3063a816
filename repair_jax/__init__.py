"""repair_jax: find and repair group-level and individual errors of trained classifiers in JAX."""

from repair_jax.classifier import Classifier, as_classifier, from_apply_fn, from_linen, from_nnx
from repair_jax.data import Dataset, Split, load_dataset
from repair_jax.diagnosis import diagnose, diagnose_arrays, diagnose_run, format_summary
from repair_jax.errors import UserError
from repair_jax.metrics import (
    accuracy, auroc_ovr, balanced_accuracy, confusion_disparity, confusion_matrix, degree_of_bias,
    macro_f1, mean_average_precision, precision_recall_f1, precision_std, soft_cd, soft_confusion_matrix,
    soft_type1conf, top_pairs, top_triplets, type1conf, type1conf_matrix, type2conf, type2conf_matrix,
)
from repair_jax.models import create_model, init_variables
from repair_jax.runs import Run, load_run, read_run_info, train_run
from repair_jax.train import (
    TrainConfig, TrainState, erm_objective, evaluate, fit, make_train_step, predict,
    softmax_cross_entropy, sigmoid_binary_cross_entropy, train_model,
)

__version__ = "0.1.0"
