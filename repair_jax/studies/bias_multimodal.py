"""The Que-1 analogue of Sharma (n.d.) as a config and its runner: LSTM-CNN with each image
backbone (ResNet, ShuffleNetV2), with and without MTL (L_Fus vs L_MML), on synthetic captions of real
images; the average-metrics table (fusion output), the "Accuracy of multiple heads" row (fusion,
CNN, LSTM, ensemble) and the class-wise tables (incl. DI). Config files:
``experiments/configs/bias_que1_*.py``.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

from repair_jax.bias.compare import evaluate_predictions
from repair_jax.errors import UserError
from repair_jax.experiment import nested_train, runner
from repair_jax.train import TrainConfig


CAPTIONED = ("fashion_mnist_captions", "digits_captions")


@dataclasses.dataclass(frozen=True)
class MultimodalBiasStudy:
    """Variants are ``<backbone>`` (L_Fus) or ``<backbone>+mtl`` (L_MML with ``alphas``). ``train``: the recipe
    of every variant (epochs, batch size, optimizer, learning rate, ...; each seed replaces its ``seed``) and the
    training-set size of ``captions`` (``train_limit``); the data set is ``captions`` and the model the LSTM-CNN
    of the variant, so ``train.dataset``, ``model`` and ``model_kwargs`` stay at their defaults."""

    captions: str = "fashion_mnist_captions"  # or digits_captions, or npz:PATH (npz_captions)
    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(epochs=10, batch_size=128, lr=1e-3))
    backbone_kwargs: tuple = (("resnet18", (("width", 16),)), ("shufflenet_v2", ()))
    variants: tuple = ("resnet18", "shufflenet_v2", "resnet18+mtl", "shufflenet_v2+mtl")
    seeds: tuple = (0, 1, 2)
    alphas: tuple = (1.0, 1.0)
    embed: int = 32
    lstm_hidden: int = 64

    @classmethod
    def upgrade_fields(cls, fields: dict) -> dict:
        """A record written before the recipe became ``train`` (:func:`repair_jax.experiment.upgraded_record`)."""
        return nested_train(fields, ("train_limit", "epochs", "batch_size", "lr"))

    def validate(self) -> None:
        """Checked before anything is loaded or written: alpha_1, alpha_2 >= 0 (L_MML), a captioned data
        set (an image-only one is refused) and variants of the form ``<backbone>[+mtl]``."""
        from repair_jax.bias.mtl import check_heads

        self.train.validate()
        self.train.require_defaults(("dataset", "model", "model_kwargs"), "the data set is `captions`, the model "
                                    "the variant's LSTM-CNN (`backbone_kwargs`, `embed`, `lstm_hidden`)")
        check_heads(("ce",) * 3, (1.0, *self.alphas))
        if not (self.captions.startswith("npz:") or self.captions in CAPTIONED):
            raise UserError(f"{self.captions!r} is not a captioned (image+text) data set: a multimodal model "
                            f"needs one of {', '.join(CAPTIONED)} or npz:PATH with token ids `text`")
        for variant in self.variants:
            split_variant(self, variant)


def split_variant(config: MultimodalBiasStudy, variant: str) -> tuple[str, bool]:
    """``"<backbone>"`` -> (backbone, False), ``"<backbone>+mtl"`` -> (backbone, True); a backbone missing
    from ``config.backbone_kwargs`` or another suffix is a :class:`UserError`."""
    backbone, _, mtl = variant.partition("+")
    if backbone not in dict(config.backbone_kwargs) or mtl not in ("", "mtl"):
        raise UserError(f"unknown variant {variant!r}: use a backbone of backbone_kwargs, optionally +mtl")
    return backbone, mtl == "mtl"


def load_captions(name: str, seed: int, train_limit: int | None):
    from repair_jax.bias.captions import digits_captions, fashion_mnist_captions, npz_captions

    if name.startswith("npz:"):  # a user's own images with caption token ids (npz_captions)
        return npz_captions(name[4:], seed=seed)
    if name == "fashion_mnist_captions":
        return fashion_mnist_captions(seed=seed, train_limit=train_limit)
    if name == "digits_captions":
        return digits_captions(seed=seed, train_limit=train_limit)
    raise UserError(f"unknown captioned data set {name!r}; choose fashion_mnist_captions, digits_captions "
                    "or npz:PATH")


def run_multimodal_variant(config: MultimodalBiasStudy, variant: str, seed: int, data) -> dict:
    """Trains one LSTM-CNN variant and returns its row (fusion output metrics + head accuracies)."""
    from repair_jax.bias.mtl import head_accuracies, predict_heads
    from repair_jax.bias.multimodal import HEAD_NAMES, lstm_cnn_model, train_multimodal
    backbone, mtl = split_variant(config, variant)
    kwargs = dict(config.backbone_kwargs)
    model = lstm_cnn_model(backbone, data.num_classes, len(data.vocab), config.embed, config.lstm_hidden,
                           **dict(kwargs[backbone]))
    cfg = dataclasses.replace(config.train, seed=seed)
    a1, a2 = config.alphas if mtl else (0.0, 0.0)
    state, history = train_multimodal(model, data, cfg, a1, a2)
    z = predict_heads(state, data.inputs("test"))
    y = data.images.test.y
    row = evaluate_predictions(variant, y, z[:, 0], data.num_classes, curves=False)
    row.update(variant=variant, seed=seed, head_accuracies=head_accuracies(z, y, HEAD_NAMES),
               final_train_loss=history[-1]["train_loss"] if history else None)
    return row


@runner(MultimodalBiasStudy)
def run_multimodal_study(config: MultimodalBiasStudy, out: Path, *, force: bool, progress: bool) -> dict:
    from repair_jax.studies.bias import sweep

    load = functools.lru_cache(None)(lambda s: load_captions(config.captions, s, config.train.train_limit))
    return sweep(config, out, lambda v, s: run_multimodal_variant(config, v, s, load(s)),
                 lambda: load(config.seeds[0]).images.class_names, force=force, progress=progress,
                 title="LSTM-CNN bias study (Sharma n.d., Que-1 analogue)")
