"""The config's schemas, and validating a composed config once, before TensorFlow is imported.

Hydra's structured-config schema pattern: each schema is a dataclass registered in Hydra's
ConfigStore as `schema/<group>/<name>`, and each option's YAML file extends it:

    # conf/optimizer/momentum.yaml
    defaults:
      - /schema/optimizer/sgd@_here_
    lr: 0.05
    momentum: 0.9

The dataclass holds every key's type, default and meaning (a comment) and its range checks
(`__post_init__`); the YAML holds only the option's own presets. So each default is written
once, and Hydra rejects unknown keys and wrong types while composing (`--cfg job` and a sweep
fail before any job starts). `validate(cfg)` then runs the range checks of every group (and
checks configs that were not composed by Hydra, e.g. a loaded config.yaml) and raises a
`ConfigError` naming the key, the value and the fix.

A schema's `_target_` default names what the option builds (`hydra.utils.instantiate`
convention); options that share a target share a schema (sgd, momentum and nesterov are all
`keras.optimizers.SGD`). Schemas marked `OPEN` (the `custom` options) accept extra keys: they go
to the user's own `_target_`. Adding an option: one YAML file, plus one schema class (decorated
with `@schema`) where the target is new.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from tftrain.schema.registry import (MULTI, ROOT_KEYS, SCHEMAS, default_target, field_types, is_open, meanings, schema,
                                     schema_of, type_name)

# Importing the schema modules registers them (each module: one group family).
from tftrain.schema import callbacks, data, initializer, logger, model, optimizer, problem, schedule, task, trainer  # noqa: E402,F401,I001
from tftrain.schema.validate import check_node, validate  # noqa: E402

# ${tftrain_direction:${trainer.objective},${trainer.objective_mode},${problem.metrics}}: maximize | minimize
OmegaConf.register_new_resolver("tftrain_direction", problem.direction, replace=True)


def _dirname(overrides, exclude, params=None) -> str:
    import os

    from tftrain.sweep.rundirs import short_dirname

    # What the sweep varies: its sweeper's params (presets, Optuna's space) and the command line's
    # sweeps (TFTRAIN_SWEPT_KEYS, set by tftrain's CLI).
    first = [str(k) for k in (params or {})] + [k for k in os.environ.get("TFTRAIN_SWEPT_KEYS", "").split(",") if k]
    return short_dirname(list(overrides), list(exclude or ()), first)


# ${tftrain_dirname:${hydra.overrides.task},<keys to leave out>,<the sweeper's params>}: a sweep
# job's short directory name
OmegaConf.register_new_resolver("tftrain_dirname", _dirname, replace=True)
