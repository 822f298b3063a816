"""Per-example gradients, Hessian-vector products and influence functions.

Source: Adebayo 2022, Ch. 3.4 (Eq. 3.1-3.3) and Ch. 6.4 (Eq. 6.1-6.5); K-FAC / EK-FAC
curvature: :mod:`repair_jax.influence.kfac`. The methods, by name, with what each needs and supports:
:data:`INFLUENCE_METHODS` (:mod:`repair_jax.influence.methods`).
"""

from repair_jax.influence.gradients import (
    ClassifierLoss, batch_gradient, flatten_per_example, layerwise_per_example_grads, map_gradient_chunks,
    per_example_grad_dot, per_example_grads,
)
from repair_jax.influence.hvp import (
    SOLVERS, IHVPResult, InfluenceWarning, cg_solve_tree, damped_operator, hessian_matrix, inverse_hvp,
    largest_eigenvalue, make_hvp, solve_cg, solve_system, training_objective,
)
from repair_jax.influence.functions import (
    confusion_quantity, group_disparity_quantity, influence_pert_disparity_y, influence_pert_loss,
    influence_pert_loss_y, influence_pert_x, influence_pert_y, influence_up, influence_up_disparity, influence_up_loss,
    influence_up_params, label_flip_scores, s_test, test_loss_quantity, tracin,
)
from repair_jax.influence.fitted import (
    BlockSolveResult, InfluenceFit, fit_hessian, training_gradients,
)
from repair_jax.influence.kfac import (
    FISHER, KfacFit, KfacLayer, fit_ekfac, fit_kfac, fit_kronecker, kronecker_curvature,
)
from repair_jax.influence.projection import (
    PROJECTIONS, ProjectedFit, fit_projected, project_gradients, projection_rows,
)
from repair_jax.influence.methods import (
    FIT_METHODS, INFLUENCE_METHODS, KFAC_METHODS, InfluenceMethod, fit_influence, get_influence_method,
)
from repair_jax.influence.evaluate import (
    LDS_METHODS, attribution_scores, draw_subsets, linear_datamodeling_score, loo_changes, loo_correlation,
    noisy_label_auc, predicted_outputs, retrain_on_subsets, self_influence, subset_outputs, validate_lds_args,
)
from repair_jax.influence.workflow import (
    GroupRule, check_test_indices, float32_loss_underflow, group_mask, influence_run, plot_title,
    validate_influence_args,
)
