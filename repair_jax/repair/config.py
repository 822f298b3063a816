"""The WR study's configuration (Zhong et al. 2022, Sec. 4.1-4.4)."""

from __future__ import annotations

import dataclasses

from repair_jax.errors import UserError
from repair_jax.repair.methods import METHODS, WR_METHODS
from repair_jax.repair.verdict import accuracy_loss_allowed
from repair_jax.repair.weighted import RHO_GRID, check_rho
from repair_jax.train import TrainConfig

# The fields that determine a single run's record (its fine-tuning and the splits it is scored on).
# The others (seeds, methods, rhos, lambdas) only choose which runs a study makes and how it reads
# them, so a study may be resumed with more seeds or methods and re-read with other thresholds.
RUN_FIELDS = ("epochs", "lr", "batch_size", "optimizer", "schedule", "l2", "select_split", "eval_split")


@dataclasses.dataclass
class RepairConfig:
    """The fine-tuning schedule shared by orig-ft and every WR method, and the study's options."""

    epochs: int = 5
    lr: float = 1e-4
    batch_size: int = 64
    optimizer: str = "adam"
    schedule: str = "constant"
    l2: float = 0.0
    seeds: int = dataclasses.field(default=5, metadata={"help": 'seeds for the selected settings'})
    methods: tuple[str, ...] = WR_METHODS
    rhos: tuple[float, ...] = RHO_GRID
    lambda1: float = dataclasses.field(default=0.25,
        metadata={"help": 'error reduction that counts as repaired (Zhong et al. 2022, Sec. 2.2.3)'})
    lambda2: float = dataclasses.field(default=0.01,
        metadata={"help": "accuracy loss allowed: absolute (0.01 = 1 point), or with lambda2_relative a fraction of orig-ft's accuracy"})
    lambda2_relative: bool = dataclasses.field(default=False,
        metadata={"help": "read lambda2 as a fraction of orig-ft's accuracy (Zhong et al. 2022, Sec. 2.2.3: 1% of it)"})
    select_split: str = dataclasses.field(default="val",
        metadata={"help": 'split on which rho is selected (numbers are reported on test)'})
    eval_split: str = "test"

    def validate(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise UserError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
        if self.seeds < 1:
            raise UserError(f"seeds must be >= 1, got {self.seeds}")
        if not self.rhos:
            raise UserError("the rho grid is empty")
        for r in self.rhos:
            check_rho(r)
        if not 0 <= self.lambda1 <= 1 or not 0 <= self.lambda2 <= 1:
            raise UserError("lambda1 and lambda2 must lie in [0, 1]")
        self.train_config(0).validate()

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, optimizer=self.optimizer,
                           lr=self.lr, schedule=self.schedule, l2=self.l2, seed=seed)

    def accuracy_loss_allowed(self, orig_ft_accuracy: float) -> float:
        """lambda2 as an accuracy difference (see :func:`repair_jax.repair.verdict.accuracy_loss_allowed`)."""
        return accuracy_loss_allowed(self.lambda2, orig_ft_accuracy, self.lambda2_relative)

    def run_fields(self) -> dict:
        """The fields of :data:`RUN_FIELDS`: what a resumed study must share with the one it resumes."""
        return {k: getattr(self, k) for k in RUN_FIELDS}

