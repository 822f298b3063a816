"""LSTM-CNN multimodal classifier of Sharma n.d., Que-1 ("Network Architecture (LSTM-CNN)"
and "(LSTM-CNN + MTL)"): an LSTM text encoder and a CNN image encoder whose embeddings are
concatenated into a fusion classifier (Z_Fus); the MTL variant adds a classifier on each embedding
(Z_CNN, Z_LSTM) and trains L_MML = L_Fus + alpha_1 L_CNN + alpha_2 L_LSTM (all cross-entropy).

``heads`` returns (Z_Fus, Z_CNN, Z_LSTM) stacked as (N, 3, K), so :func:`repair_jax.bias.mtl.mtl_loss`
with losses ``("ce", "ce", "ce")`` and alphas ``(1, alpha_1, alpha_2)`` is L_MML, and alphas
``(1, 0, 0)`` is L_Fus alone. The model's output (``__call__``) is Z_Fus.
"""

from __future__ import annotations

import dataclasses
import flax.linen as nn
import jax
import jax.numpy as jnp

from repair_jax.bias.captions import CaptionedDataset, check_text_ids
from repair_jax.bias.mtl import check_heads, mtl_objective
from repair_jax.data import Split
from repair_jax.errors import UserError

HEAD_NAMES = ("fusion", "cnn", "lstm")


class LSTMEncoder(nn.Module):
    """Token ids (N, L) (0 = padding, at the end) -> the LSTM's last hidden state at each sequence's
    true length (N, hidden)."""

    vocab_size: int
    embed: int = 32
    hidden: int = 64

    @nn.compact
    def __call__(self, text):
        lengths = jnp.maximum(jnp.sum(text > 0, axis=1), 1)
        e = nn.Embed(self.vocab_size, self.embed)(text)
        (_, h), _ = nn.RNN(nn.OptimizedLSTMCell(self.hidden), return_carry=True)(e, seq_lengths=lengths)
        return h


class LSTMCNN(nn.Module):
    """``image_backbone``: a model of :mod:`repair_jax.models` (its penultimate features are the image
    embedding). ``__call__(x, train, sample_weight, text)`` -> (Z_Fus, concatenated embedding)."""

    image_backbone: nn.Module
    num_classes: int
    vocab_size: int
    embed: int = 32
    hidden: int = 64

    def setup(self):
        self.text_encoder = LSTMEncoder(self.vocab_size, self.embed, self.hidden)
        self.fusion = nn.Dense(self.num_classes)
        self.cnn_head = nn.Dense(self.num_classes)
        self.lstm_head = nn.Dense(self.num_classes)

    def heads(self, x, train: bool = False, sample_weight=None, text=None):
        if text is None:
            raise UserError("a multimodal (LSTM-CNN) model needs caption token ids (`text`); "
                            "this data set is image-only")
        _, img = self.image_backbone(x, train, sample_weight)
        txt = self.text_encoder(text)
        both = jnp.concatenate([img, txt], axis=-1)
        z = jnp.stack([self.fusion(both), self.cnn_head(img), self.lstm_head(txt)], axis=1)
        return z, both

    def __call__(self, x, train: bool = False, sample_weight=None, text=None):
        z, both = self.heads(x, train, sample_weight, text)
        return z[:, 0], both


def lstm_cnn_model(backbone: str, num_classes: int, vocab_size: int, embed: int = 32, lstm_hidden: int = 64,
                   **backbone_kwargs) -> LSTMCNN:
    """An LSTM-CNN over ``create_model(backbone, ...)`` (e.g. ``resnet18``, ``shufflenet_v2``)."""
    from repair_jax.models import create_model

    for key, v in (("vocab_size", vocab_size), ("embed", embed), ("lstm_hidden", lstm_hidden)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UserError(f"LSTM-CNN option {key} must be a positive integer, got {v!r}")
    return LSTMCNN(create_model(backbone, num_classes, **backbone_kwargs), num_classes, vocab_size, embed,
                   lstm_hidden)


def mml_objective(alpha_cnn: float = 1.0, alpha_lstm: float = 1.0, l2: float = 0.0):
    """L_MML = L_Fus + alpha_1 L_CNN + alpha_2 L_LSTM (Sharma n.d., Que-1) as a training objective over batches
    with ``x``, ``text``, ``y``; ``alpha_cnn = alpha_lstm = 0`` gives the single-head L_Fus."""
    check_heads(("ce",) * 3, (1.0, alpha_cnn, alpha_lstm))
    return mtl_objective(("ce", "ce", "ce"), (1.0, alpha_cnn, alpha_lstm), l2=l2, inputs=("x", "text"))


def check_multimodal_data(data, vocab_size: int) -> None:
    """A multimodal model needs a :class:`CaptionedDataset` whose token ids fit its vocabulary."""
    if not isinstance(data, CaptionedDataset):
        name = getattr(data, "name", type(data).__name__)
        raise UserError(f"a multimodal (LSTM-CNN) model needs image+text data (e.g. fashion_mnist_captions); "
                        f"{name} is image-only")
    for text in data.text.values():
        check_text_ids(text, vocab_size)


def train_multimodal(model: LSTMCNN, data: CaptionedDataset, config, alpha_cnn: float = 1.0,
                     alpha_lstm: float = 1.0, progress: bool = False):
    """Trains ``model`` on ``data`` with :func:`mml_objective` through :func:`repair_jax.train.fit`;
    returns (state, history). Validation during training is skipped (fit's evaluator is image-only)."""
    from repair_jax.train import create_train_state, fit, make_optimizer, steps_per_epoch

    check_multimodal_data(data, model.vocab_size)
    objective = mml_objective(alpha_cnn, alpha_lstm, config.l2)
    tr = data.images.train
    x0 = jnp.zeros((2, *data.images.input_shape), jnp.float32)
    t0 = jnp.ones((2, data.text["train"].shape[1]), jnp.int32)
    variables = dict(jax.jit(lambda k: model.init(k, x0, text=t0))(jax.random.PRNGKey(config.seed)))
    variables.setdefault("batch_stats", {})
    steps = config.epochs * steps_per_epoch(config, len(tr))
    state = create_train_state(model, variables, make_optimizer(config, steps))
    images = dataclasses.replace(data.images, val=Split(tr.x[:0], tr.y[:0]))
    make_batch = lambda idx: {"x": tr.x[idx], "y": tr.y[idx], "text": data.text["train"][idx]}
    return fit(state, images, config, objective=objective, progress=progress, make_batch=make_batch)
