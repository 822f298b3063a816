"""Bias measurement and mitigation of the Dependable AI report (Sharma n.d.).

Metrics live in :mod:`repair_jax.metrics` (class-wise disparate impact, macro/weighted averages,
ROC curves, :func:`repair_jax.metrics.bias_summary`); this package holds the comparison of runs and
its figures, and the report's mitigations: Permuted AdaIN (the ``padain_p`` option of the conv
models), multi-task heads, and the LSTM-CNN multimodal fusion on synthetic captions of real images.
See docs/papers/bias.md.
"""

from repair_jax.bias.captions import (
    CaptionedDataset, build_vocab, caption_dataset, check_text_ids, digits_captions, encode,
    fashion_mnist_captions, make_captions, npz_captions, tokenize,
)
from repair_jax.bias.compare import compare_rows, compare_runs, evaluate_predictions, format_comparison
from repair_jax.bias.mtl import (
    HEAD_LOSSES, MultiHead, check_heads, ensemble_logits, head_accuracies, kl_to_one_hot, l2_to_one_hot,
    mtl_loss, mtl_objective, multi_head_model, predict_heads,
)
from repair_jax.bias.multimodal import (
    LSTMCNN, LSTMEncoder, check_multimodal_data, lstm_cnn_model, mml_objective, train_multimodal,
)
from repair_jax.padain import PermutedAdaIN, adain, check_padain_p, instance_stats, permuted_adain
from repair_jax.bias.plots import plot_comparison, plot_roc_curves

__all__ = [ "CaptionedDataset", "HEAD_LOSSES", "LSTMCNN", "LSTMEncoder",
    "MultiHead", "PermutedAdaIN", "adain",
    "build_vocab", "caption_dataset", "check_heads", "check_multimodal_data", "check_padain_p",
    "check_text_ids", "compare_rows", "compare_runs", "digits_captions", "encode", "ensemble_logits",
    "evaluate_predictions", "fashion_mnist_captions", "format_comparison", "head_accuracies",
    "instance_stats", "kl_to_one_hot", "l2_to_one_hot", "lstm_cnn_model", "make_captions", "mml_objective",
    "mtl_loss", "mtl_objective", "multi_head_model", "permuted_adain", "plot_comparison", "plot_roc_curves",
    "predict_heads", "tokenize", "train_multimodal",
]
