"""The README's worked examples as files, for the tests that run them as pasted."""

from __future__ import annotations


def readme_example() -> dict[str, str]:
    """The "Your own model" section's files, by the name in each block's first comment line."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Your own model", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    files = {}
    for lang, body in re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S):
        first = body.splitlines()[0]
        if lang in ("python", "toml") and first.startswith("# "):
            files[first[2:].split()[0]] = body
    return files
