"""`python -m tftrain --help`: the groups and their options from the config directory, and the
composed config with each key's meaning from its schema."""

from __future__ import annotations

from tftrain.config.files import config_dir


def fast_help(overrides: list[str]) -> str:
    """`--help` without Hydra's help renderer, which loads every option of every group (~1.2 s):
    the groups and their options from the config directory, and the composed config."""
    from omegaconf import OmegaConf

    from tftrain.config.compose import compose

    root = config_dir()
    top = OmegaConf.load(root / "config.yaml")
    lines = [str(top.hydra.help.header).rstrip(), "", "== Config groups (choose one option each: group=option) =="]
    for group in sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "hydra"))):
        lines.append(f"{group}: {', '.join(sorted(q.stem for q in (root / group).glob('*.yaml')))}")
    cfg = compose(overrides)
    lines += ["", "== Config (defaults shown, with what each key means; override any key: key=value) =="]
    lines += described_config(cfg)
    lines += ["", str(top.hydra.help.footer).rstrip(), "Hydra's own help: python -m tftrain --hydra-help"]
    return "\n".join(lines)


def _inline(value) -> str:
    import yaml
    from omegaconf import OmegaConf

    if hasattr(value, "keys") or isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        value = OmegaConf.to_container(value, resolve=False) if not isinstance(value, (list, tuple)) else value
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text[:-4].strip() if text.endswith("\n...") else text


def described_config(cfg) -> list[str]:
    """The composed config as YAML, each key followed by its meaning from its schema (comments in
    tftrain/schema/*.py); nested settings (data.augment, callbacks.early_stopping) likewise."""
    import dataclasses
    import typing

    from tftrain.schema import MULTI, meanings, schema_of

    def render(node, cls, indent: str) -> list[str]:
        notes = meanings(cls) if cls is not None else {}
        hints = typing.get_type_hints(cls) if cls is not None else {}
        out = []
        for key, value in node.items():
            note = f"  # {notes[key]}" if key in notes else ""
            sub = hints.get(key)
            if hasattr(value, "keys") and value and sub is not None and dataclasses.is_dataclass(sub):
                out += [f"{indent}{key}:{note}", *render(value, sub, indent + "  ")]
            else:
                out.append(f"{indent}{key}: {_inline(value)}{note}")
        return out

    lines = []
    for group, node in cfg.items():
        if group == "hydra":
            continue
        if not hasattr(node, "keys"):
            lines.append(f"{group}: {_inline(node)}")
        elif group in MULTI:  # logger: each chosen option under its name
            lines.append(f"{group}:" + ("" if node else " {}"))
            for name, option in node.items():
                lines += [f"  {name}:", *render(option, schema_of(group, option), "    ")]
        else:
            lines += [f"{group}:", *render(node, schema_of(group, node), "  ")]
    return lines
