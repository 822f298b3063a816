"""Sharma n.d., Que-1 analogue: LSTM-CNN with ResNet and ShuffleNetV2 image backbones, with
and without MTL (L_MML = L_Fus + L_CNN + L_LSTM), on fashion_mnist_captions (real Fashion-MNIST
images, synthetic captions: 20 % ambiguous, 10 % naming a confusable class); 3 seeds.

    from repair_jax.experiment import load_config, run_experiment
    run_experiment(load_config("bias_que1_fashion_mnist_captions"), "out/bias_que1")
"""

from repair_jax.studies.bias_multimodal import MultimodalBiasStudy
from repair_jax.train import TrainConfig


def get_config(smoke: bool = False) -> MultimodalBiasStudy:
    if smoke:  # the same backbones, tiny, one epoch on 400 of the digits' captions (8x8 images: seconds)
        return MultimodalBiasStudy(
            captions="digits_captions", train=TrainConfig(epochs=1, batch_size=64, lr=1e-3, train_limit=400),
            seeds=(0,), embed=8, lstm_hidden=8,
            backbone_kwargs=(("resnet18", (("width", 4),)),
                             ("shufflenet_v2", (("stage_channels", (8, 16, 32)), ("stage_repeats", (1, 1, 1)),
                                                ("stem", 8), ("last", 32)))))
    return MultimodalBiasStudy(train=TrainConfig(epochs=10, batch_size=128, lr=1e-3), seeds=(0, 1, 2),
                               backbone_kwargs=(("resnet18", (("width", 16),)), ("shufflenet_v2", ())))
