"""The commands README.md shows, read from README.md itself so that the tests that run them
(tests/test_readme.py) cannot drift from it.

A command is
- a line of a fenced ```bash / ```sh / ```console block (its trailing `# comment` cut off), or a
  `$ `-prefixed line of an unlabelled block (the README's error examples);
- a whole fenced ```bash block that starts with `#!` (a job script: one command);
- an inline code span (it may wrap onto the next line) that starts with `python `, `tensorboard `,
  `bash `, `pip `, `mlflow ` or `pytest`;
- the ```python block that does `import tftrain` (the library API).
```python blocks that open with `# <name>.py` are files the commands use, not commands: `files()`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"

SHELL_LANGS = {"bash", "sh", "shell", "console"}
INLINE_PREFIXES = ("python ", "tensorboard ", "bash ", "pip ", "mlflow ", "pytest")
FENCE = re.compile(r"^```(\S*)\s*$")
INLINE = re.compile(r"(?<!`)`([^`]+)`(?!`)")


@dataclass(frozen=True)
class Command:
    text: str       # as the README shows it (whitespace collapsed, comment cut)
    kind: str       # "shell", "script" (a #! block), "python" (the library API block)
    line: int       # 1-based line of README.md where it appears


def _blocks(lines: list[str]):
    """(language, first line number, body lines) of each fenced block; the rest as (None, n, [line])."""
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            yield None, i + 1, [lines[i]]
            i += 1
            continue
        lang, start, body = m.group(1).lower(), i + 2, []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        yield lang, start, body


def _strip_comment(line: str) -> str:
    """Cut a trailing shell comment (` # ...` outside quotes)."""
    quote = None
    for j, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (j == 0 or line[j - 1].isspace()):
            return line[:j].rstrip()
    return line.rstrip()


def commands(text: str | None = None) -> list[Command]:
    text = README.read_text() if text is None else text
    lines = text.splitlines()
    found: list[Command] = []
    prose: list[tuple[int, str]] = []
    for lang, start, body in _blocks(lines):
        if lang is None:
            prose.append((start, body[0]))
        elif lang in SHELL_LANGS:
            if body and body[0].startswith("#!"):
                found.append(Command("\n".join(body).strip(), "script", start))
                continue
            for k, raw in enumerate(body):
                cmd = _strip_comment(raw[2:] if lang == "console" and raw.startswith("$ ") else raw)
                if cmd and (lang != "console" or raw.startswith("$ ")):
                    found.append(Command(" ".join(cmd.split()), "shell", start + k))
        elif lang == "":
            found += [Command(" ".join(raw[2:].split()), "shell", start + k)
                      for k, raw in enumerate(body) if raw.startswith("$ ")]
        elif lang == "python" and any(re.match(r"\s*import tftrain\b", b) for b in body):
            if not (body and re.match(r"#\s*\S+\.py\s*$", body[0])):
                found.append(Command("\n".join(body).strip(), "python", start))
    # Inline spans: join the prose paragraph-wise so that a span wrapped onto the next line is one.
    joined, starts = "", []
    for n, line in prose:
        starts.append((len(joined), n))
        joined += line + "\n"
    for m in INLINE.finditer(joined):
        span = " ".join(m.group(1).split())
        if span.startswith(INLINE_PREFIXES):
            line = max(n for pos, n in starts if pos <= m.start())
            found.append(Command(span, "shell", line))
    return sorted(found, key=lambda c: c.line)


def files(text: str | None = None) -> dict[str, str]:
    """The files the README shows (```python blocks that open with `# <name>.py`): name -> text."""
    text = README.read_text() if text is None else text
    out = {}
    for lang, _, body in _blocks(text.splitlines()):
        if lang == "python" and body and (m := re.match(r"#\s*(\S+\.py)\s*$", body[0])):
            out[m.group(1)] = "\n".join(body) + "\n"
    return out


if __name__ == "__main__":
    for c in commands():
        print(f"{c.line:4d} {c.kind:6s} {c.text.splitlines()[0]}")
    print(len(commands()), "commands;", len(set(c.text for c in commands())), "distinct")
