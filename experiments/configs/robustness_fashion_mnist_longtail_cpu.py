"""Pradhan et al. 2020, Table 1 analogue at CPU size, the longtail(100) column rerun so that no model is degenerate.

``robustness_fashion_mnist_cpu`` (3 epochs at batch 128) fails its precondition "no degenerate model": every
SqueezeNet (width 0.5) at longtail(100) predicts one class (balanced accuracy 0.100 for all five methods and all
3 seeds, 15 of its 90 models). Its longtail(100) training set is about 490 images (2 to 200 per class), so batch 128
gives 3 optimizer steps an epoch, 9 in all, and the triangular cyclical rate a half-cycle of 2 steps: the network
barely trains. This config is that column again with the one change that gives it the balanced column's number of
optimizer steps: batch 32 (492 images // 32 = 15 steps an epoch, 45 in all, the same as balanced's 2,000 // 128 x
3 epochs). Everything else is the committed CPU run's recipe: the same stratified 2,000-image subset and its
imbalance cut per seed (so the same training images as its longtail(100) cells), 3 epochs, Adam on the triangular
cyclical rate 1e-4 to 3e-3, the CNN at width 16 (dense 64) and SqueezeNet at width 0.5, UAPs on 500 test images, the
full balanced test split; both models x all five methods x 3 seeds. The balanced and linear(10) columns are not
rerun (they passed; with the whole grid at about 100 s a cell on this shared 2-core CPU it would not fit the time
given to this rerun): read them from ``robustness_fashion_mnist_cpu``.

The setting was chosen from probes, not from the table: one plain SqueezeNet (width 0.5) at longtail(100), seed 0,
each setting run once (balanced accuracy on the 10,000 test images; wall time of the cell: training, prediction and
the UAP, on one shared core, 2026-12-07):

| setting (SqueezeNet width 0.5 unless said) | optimizer steps | balanced accuracy | wall s |
|---|---|---|---|
| the CPU run's: 3 epochs, batch 128 | 9 | 0.100 (one class) | 103 |
| 10 epochs, batch 128 | 30 | 0.248 | 175 |
| width 1.0, 3 epochs, batch 128 | 9 | 0.100 (one class) | 191 |
| max_lr 1e-2 (not 3e-3), 3 epochs, batch 128 | 9 | 0.100 (one class) | 206 |
| 3 epochs, batch 32 (chosen) | 45 | 0.222 | 105 |

Too few optimizer steps, not the width or the rate, leaves SqueezeNet at chance; more epochs would fix it too but
cost more per cell and change the recipe on every level, while batch 32 at the same 3 epochs gives the
longtail(100) cells the balanced cells' step count at about the committed cell's cost. (The probes' wall times
vary with other jobs on the core: the 10-epoch cell trains 30 steps, fewer than batch 32's 45.)

The committed run (2026-12-07): 30 cells in 52.5 minutes of one shared core; preconditions PASS (lowest balanced
accuracy 0.187, SqueezeNet AugMix seed 1); no method differs significantly from plain training (paired t, 3 seeds).

Smoke size: the full config's (digits, seconds), the same code path.
"""

from pathlib import Path

from repair_jax.experiment import load_config
from repair_jax.studies.robustness import RobustnessStudy
from repair_jax.train import TrainConfig


def get_config(smoke: bool = False) -> RobustnessStudy:
    if smoke:
        return load_config(str(Path(__file__).with_name("robustness_fashion_mnist.py")), smoke=True)
    return RobustnessStudy(train=TrainConfig(dataset="fashion_mnist", train_limit=2000, epochs=3, batch_size=32),
                           levels=("longtail(100)",),
                           uap_examples=500,
                           model_kwargs=(("cnn", (("width", 16), ("dense", 64))),
                                         ("squeezenet", (("width_mult", 0.5),))))
