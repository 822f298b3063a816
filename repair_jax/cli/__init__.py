"""The one command-line entry point: ``repair-jax`` / ``python -m repair_jax``.

Each subcommand is a module with ``configure(parser)`` (declares its flags; ``--out`` through
:func:`repair_jax.cli.common.add_out`) and ``run(args) -> int`` (validates, calls one library
function, prints), registered in ``SUBCOMMANDS``. Every subcommand gets ``--force`` and
``--no-progress`` (:mod:`repair_jax.cli.common`), its ``--out`` is checked before ``run`` is called,
and ``--help`` shows every default. A :class:`UserError` anywhere becomes one line
``repair-jax NAME: error: ...`` on stderr and exit code 2; so does a bad flag.
"""

from __future__ import annotations

import importlib
import sys

from repair_jax.cli.common import HelpFormatter, Parser, add_common_flags, check_args
from repair_jax.errors import UserError

# name -> (module, help). A module provides configure(parser) and run(args) -> int.
SUBCOMMANDS = {
    "train": ("repair_jax.cli.train", "train a classifier and write a run directory"),
    "import": ("repair_jax.cli.import_model", "your own trained model (NNX or linen) and checkpoint as a run directory"),
    "diagnose": ("repair_jax.cli.diagnose", "diagnose the group-level errors of a trained run"),
    "quickstart": ("repair_jax.cli.quickstart", "the main job on the embedded digits: train, diagnose, repair"),
    "irepair": ("repair_jax.cli.irepair", "repair individual misclassifications (I-REPAIR, Henriksen et al. 2022)"),
    "guide": ("repair_jax.cli.guide", "model guiding: flag mislabelled / spurious points, update the model"),
    "influence": ("repair_jax.cli.influence", "rank training points by influence on a test loss or group metric"),
    "repair": ("repair_jax.cli.repair", "repair a confused pair / biased triplet with Weighted Regularization"),
    "compare": ("repair_jax.cli.compare", "compare several runs side by side: average and class-wise metrics, DI, ROC curves"),
    "explain": ("repair_jax.cli.explain", "attributions of one example of a trained run (gradients, IG, LRP, GradCAM, ...)"),
}


def build_parser(commands=None) -> Parser:
    """The parser; only the subcommands in ``commands`` (default: all) get their flags, so that a run
    imports the stack of its own subcommand only (the others are still listed by ``--help``)."""
    parser = Parser(prog="repair-jax", description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, (module, help_) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_, formatter_class=HelpFormatter)
        if commands is None or name in commands:
            importlib.import_module(module).configure(p)
            add_common_flags(p)
    return parser


def _command_of(argv) -> str | None:
    """The subcommand named in ``argv`` (its first argument that is not an option), if any."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(commands=(_command_of(argv),)).parse_args(argv)
    try:
        from repair_jax.compilation_cache import enable_compilation_cache

        enable_compilation_cache()
        check_args(args)
        return importlib.import_module(SUBCOMMANDS[args.command][0]).run(args)
    except UserError as e:
        sys.stderr.write(f"repair-jax {args.command}: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
