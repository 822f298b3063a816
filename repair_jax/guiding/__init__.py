"""Model guiding (Adebayo 2022, Ch. 5): concept library + audit set, carving, the bilevel
update with implicit differentiation, Algorithm 1."""

from repair_jax.guiding.algorithm import (
    GuidingConfig, GuidingResult, guiding_report, model_guiding, noisy_label_scores, sort_filter,
    spurious_scores, suggested_labels,
)
from repair_jax.guiding.bilevel import (
    BilevelConfig, BilevelResult, LowerLevelNotConverged, bilevel_update, hypergradient, lower_objective,
    solve_lower_level, unrolled_lower_solution, upper_objective,
)
from repair_jax.guiding.carving import (
    ConceptBasis, carved_predict, fit_concept_basis, fit_linear_head, fold_into_head, project,
)
from repair_jax.guiding.formats import (
    AuditSet, ConceptLibrary, load_audit, load_concepts, save_audit, save_concepts, validate_audit,
)
