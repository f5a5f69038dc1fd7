"""The search space of `hparams_search=optuna`: hydra-optuna-sweeper's syntax (`interval`,
`tag(log, ...)`, `int(...)`, `choice`, comma lists, `range`, fixed values), from
`hydra.sweeper.params` and the command line, parsed with Hydra's own override parser into
Optuna 4+ distributions (FloatDistribution, IntDistribution, CategoricalDistribution).
"""

from __future__ import annotations

import decimal
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from omegaconf import OmegaConf

from tftrain.errors import ConfigError

SYNTAX = ("interval(a, b) (uniform float), tag(log, interval(a, b)) (log-uniform, a > 0), int(interval(a, b)) "
          "(integer; with tag(log, ...) log-uniform), choice(x, y, ...) or x,y,... (categorical), "
          "range(start, stop[, step]) (start, start+step, ... below stop), or a fixed value")


@dataclass
class SearchSpace:
    """The dimensions Optuna samples (override key -> distribution) and the overrides every trial
    gets unchanged, in the order given."""

    distributions: dict = field(default_factory=dict)
    fixed: dict = field(default_factory=dict)  # override key -> the override as written
    # A categorical dimension's override text per value (a list or a string with spaces is stored
    # in the study as a plain value but must be written in Hydra's override syntax).
    labels: dict = field(default_factory=dict)

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """A trial's overrides: its sampled values, then the fixed overrides."""
        out = [f"{key}={self._text(key, value)}" for key, value in params.items() if key in self.distributions]
        return out + list(self.fixed.values())

    def first_point(self) -> dict:
        """A point of the space (each dimension's first choice or lower bound): its overrides
        compose if any point's do, but for a categorical's other choices."""
        return {k: d.choices[0] if hasattr(d, "choices") else d.low for k, d in self.distributions.items()}

    def _text(self, key: str, value) -> str:
        labels = self.labels.get(key)
        if labels is not None:
            return labels[_label_key(value)]
        return repr(float(value)) if isinstance(value, float) else str(value)


def _label_key(value):
    return (type(value).__name__, value)  # 1, 1.0 and True stay apart


def parse_search_space(params: Mapping[str, Any] | None, arguments: Sequence[str] = (),
                       config_loader=None) -> SearchSpace:
    """The search space of `hydra.sweeper.params` (key -> expression) and then the command line's
    overrides (`arguments`); a later entry for a key replaces an earlier one. Raises ConfigError
    naming the key for an expression Optuna cannot sample. `config_loader` lets `glob(...)` list a
    config group's options."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create(config_loader=config_loader)
    space = SearchSpace()
    entries = [(f"hydra.sweeper.params.{k}", f"{k}={_value_text(v)}") for k, v in (params or {}).items()]
    entries += [(None, a) for a in arguments]
    for config_key, text in entries:
        override = _parse(parser, text, config_key)
        key = override.get_key_element()
        space.labels.pop(key, None)
        if override.is_sweep_override():  # replaced in place: the sampler draws in the order given
            space.fixed.pop(key, None)
            space.distributions[key], labels = _distribution(override, config_key or key)
            if labels is not None:
                space.labels[key] = labels
        else:
            space.distributions.pop(key, None)
            space.fixed[key] = text
    return space


def _value_text(value) -> str:
    """A `hydra.sweeper.params` value as override text (YAML gives numbers, lists and nulls too)."""
    from hydra.core.override_parser.types import Transformer

    value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    return value if isinstance(value, str) else Transformer.str(value)


def _parse(parser, text: str, config_key: str | None):
    from hydra.errors import HydraException

    try:
        return parser.parse_override(text)
    except HydraException as e:
        key, _, value = text.partition("=")
        raise ConfigError(config_key or key, value, SYNTAX,
                          f"write it as one of these (Hydra's parser said: {str(e).splitlines()[0]})") from None


def _distribution(override, key: str):
    """(an optuna distribution, the override text of each categorical value or None)."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from optuna.distributions import FloatDistribution, IntDistribution

    value = override.value()
    raw = override.get_value_string()
    log_scale = "log" in value.tags if hasattr(value, "tags") else False
    if log_scale and not isinstance(value, IntervalSweep):
        raise ConfigError(key, raw, SYNTAX, "use tag(log, ...) on an interval only: tag(log, interval(a, b)), or "
                          "tag(log, int(interval(a, b))) for integers")
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle) or \
            not isinstance(value, (IntervalSweep, RangeSweep)):  # choice, a,b,..., shuffle(...), glob(...)
        elements = list(value.range()) if isinstance(value, RangeSweep) else \
            list(value.list) if isinstance(value, ChoiceSweep) else list(override.sweep_iterator())
        return _categorical(elements, key, raw)
    if isinstance(value, IntervalSweep):
        start, end = value.start, value.end
        if not start < end:
            raise ConfigError(key, raw, "an interval whose start is below its end", "swap or correct the bounds")
        if log_scale and start <= 0:
            raise ConfigError(key, raw, "a log-scale interval above 0", "make the lower bound positive "
                              "(e.g. tag(log, interval(1e-5, 1e-1)))")
        if isinstance(start, int) and isinstance(end, int):
            return IntDistribution(start, end, log=log_scale), None
        return FloatDistribution(float(start), float(end), log=log_scale), None
    # range(start, stop[, step]): Python's (stop excluded), as Hydra's basic sweeper enumerates it
    start, stop, step = value.start, value.stop, value.step
    if all(isinstance(x, int) for x in (start, stop, step)):
        values = range(start, stop, step)
        if len(values) == 0:
            raise ConfigError(key, raw, "a range with at least one value", "check start, stop and the step's sign")
        low, high = min(values[0], values[-1]), max(values[0], values[-1])
        return IntDistribution(low, high, step=abs(step)), None
    d_start, d_stop, d_step = (decimal.Decimal(str(x)) for x in (start, stop, step))
    n = math.ceil((d_stop - d_start) / d_step) if d_step else 0
    if n <= 0:
        raise ConfigError(key, raw, "a range with at least one value", "check start, stop and the step's sign")
    last = d_start + (n - 1) * d_step
    low, high = min(d_start, last), max(d_start, last)
    return FloatDistribution(float(low), float(high), step=float(abs(d_step))), None


def _categorical(elements: list, key: str, raw: str):
    from hydra.core.override_parser.types import Transformer
    from optuna.distributions import CategoricalDistribution

    choices, labels = [], {}
    for element in elements:
        # Optuna stores None, bool, int, float and str; a list or dict choice is stored as its text.
        value = element if element is None or isinstance(element, (bool, int, float, str)) else Transformer.str(element)
        if _label_key(value) not in labels:
            choices.append(value)
            labels[_label_key(value)] = Transformer.str(element)
    if not choices:
        raise ConfigError(key, raw, "a choice with at least one value", "list the values: choice(a, b)")
    return CategoricalDistribution(choices), labels
