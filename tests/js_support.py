"""Running the page's pure ES modules under Node in tests (no browser)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

NODE = shutil.which("node")


def run_js(module: Path, body: str, arg: object) -> object:
    """Import `module` as `m`, run `body` (an expression of `m` and `arg`) and return its JSON value."""
    script = (f"const m = await import({json.dumps(module.as_uri())});\n"
              f"const arg = JSON.parse(process.argv[1]);\n"
              f"process.stdout.write(JSON.stringify({body}));\n")
    done = subprocess.run([NODE, "--input-type=module", "-e", script, json.dumps(arg)],
                          capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)
