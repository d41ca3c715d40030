"""The pure modules of frontend/static/js/common/ run under Node (no browser): the number formatters'
rules (format.js), the .npy reader (npy.js) against files NumPy writes, "the latest request wins"
(latest-request.js) and which layers the step-through traces (traceable.js)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest

from tests import js_support

COMMON = Path(__file__).resolve().parents[1] / "frontend" / "static" / "js" / "common"
pytestmark = pytest.mark.skipif(js_support.NODE is None, reason="node is not installed")


def run_js(module: str, body: str, arg: object) -> object:
    """Import common/`module` as `m`, run `body` (an expression of `m` and `arg`) and return its JSON value."""
    return js_support.run_js(COMMON / module, body, arg)


def formatted(name: str, calls: list[list]) -> list[str]:
    return run_js("format.js", f"arg.map((args) => m.{name}(...args))", calls)


def test_format_value_rules() -> None:
    # significant digits without trailing zeros; exponent form outside [1e-3, 1e4); "—" when missing
    calls = [[3.14159], [-3.14159], [2.5], [0], [0.000012345], [0.001], [9999.4], [12345.6], [-0.5], [3.14159, 3],
             [None]]
    assert formatted("formatValue", calls) == ["3.142", "-3.142", "2.5", "0", "1.23e-5", "0.001", "9999", "1.23e+4",
                                               "-0.5", "3.14", "—"]
    assert run_js("format.js", "[m.formatValue(NaN), m.formatValue(Infinity), m.formatShort(NaN)]", None) == ["—", "—", ""]


def test_format_short_rules() -> None:
    assert formatted("formatShort", [[3.14159], [0.0004567], [123456], [0], [None], [-12.34]]) == [
        "3.14", "4.6e-4", "1.2e+5", "0", "", "-12.3"]


def test_format_cell_rules() -> None:
    # canvas numbers: integers stay integers, `digits` decimals, never "0.000" for a non-zero, a real minus
    calls = [[7], [-7], [0.5], [-0.25, 2], [1234.56], [123.456], [0.0004], [0.00004], [0.004, 2], [None], [250000.5]]
    assert formatted("formatCell", calls) == ["7", "−7", "0.500", "−0.25", "1235", "123.5", "4.0e−4", "4.0e−5",
                                              "0.004", "·", "2.5e+5"]


def test_format_percent_rules() -> None:
    calls = [[0.973], [0.00004], [0.00004, 1, {"markTiny": True}], [0.0012, 1, {"markTiny": True}], [0.5, 0],
             [0.004, 0, {"markTiny": True}], [0.12345, 2], [None], [1]]
    assert formatted("formatPercent", calls) == ["97.3%", "0.0%", "<0.1%", "0.1%", "50%", "<1%", "12.35%", "—",
                                                 "100.0%"]


def test_format_counts_shapes_and_sizes() -> None:
    assert formatted("formatInt", [[1234567], [0]]) == ["1,234,567", "0"]
    assert formatted("formatShape", [[[6, 28, 28]], [None]]) == ["6 × 28 × 28", "—"]
    assert formatted("formatBytes", [[512], [2048], [5 * 1024 * 1024 + 300_000], [None]]) == [
        "512 B", "2.0 KB", "5.3 MB", "?"]


def _npy(array: np.ndarray, version: tuple[int, int] | None = None) -> str:
    buf = io.BytesIO()
    if version is None:
        np.save(buf, array)
    else:
        np.lib.format.write_array(buf, array, version=version)
    return base64.b64encode(buf.getvalue()).decode()


READ = """arg.map((b64) => {
  try {
    const bytes = Buffer.from(b64, 'base64');
    const a = m.parseNpy(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
    return { dtype: a.dtype, shape: a.shape, data: Array.from(a.data) };
  } catch (err) { return { error: err.message }; }
})"""


def test_npy_reader_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((3, 4, 5)).astype("<f4"), rng.standard_normal((2, 3)).astype("<f8"),
              rng.integers(0, 256, (4, 4), dtype=np.uint8), rng.integers(-9, 9, (7,), dtype="<i4"),
              np.float32(2.5).reshape(())]
    files = [_npy(a) for a in arrays] + [_npy(arrays[0], version=(2, 0))]
    got = run_js("npy.js", READ, files)
    for array, answer in zip(arrays + [arrays[0]], got):
        assert answer["dtype"] == array.dtype.str.replace("=", "<")
        assert answer["shape"] == list(array.shape)
        np.testing.assert_array_equal(np.asarray(answer["data"], dtype=array.dtype), array.reshape(-1))


def test_npy_reader_refuses_what_it_cannot_read() -> None:
    good = base64.b64decode(_npy(np.zeros((4, 4), "<f4")))
    files = [base64.b64encode(b"not numpy at all").decode(), base64.b64encode(good[:-8]).decode(),
             _npy(np.zeros((2, 2), ">f4")), _npy(np.asfortranarray(np.zeros((2, 3), "<f4")))]
    errors = [answer.get("error") for answer in run_js("npy.js", READ, files)]
    assert errors == ["not a .npy file", "truncated .npy data", "unsupported .npy dtype >f4",
                      "Fortran-ordered arrays are not supported"]


def test_the_latest_request_wins() -> None:
    """common/latest-request.js: the same key asks once; an answer overtaken by a newer request is dropped (and
    its fetch aborted); the latest request's error is thrown, an aborted one's is not."""
    body = """(async () => {
      const r = m.createLatestRequest();
      const log = [];
      const slow = (value, ms) => (signal) => new Promise((done, fail) => {
        let settled = false;
        const t = setTimeout(() => { settled = true; done(value); }, ms);
        signal.addEventListener('abort', () => { if (settled) return; clearTimeout(t); log.push(`aborted ${value}`);
          fail(Object.assign(new Error('aborted'), { name: 'AbortError' })); });
      });
      const first = r.run('a', slow('A', 50));
      const again = await r.run('a', slow('A2', 1));
      const second = r.run('b', slow('B', 10));
      const results = [await first, again, await second];
      let thrown = null;
      try { await r.run('c', async () => { throw new Error('boom'); }); } catch (err) { thrown = err.message; }
      r.abort();
      const afterAbort = await r.run('c', async () => 'C');
      return { results, log, thrown, afterAbort, current: r.isCurrent('c') };
    })()"""
    out = run_js("latest-request.js", f"await {body}", None)
    assert out["results"] == [None, None, {"value": "B"}]
    assert out["log"] == ["aborted A"]
    assert out["thrown"] == "boom"
    assert out["afterAbort"] == {"value": "C"} and out["current"] is True


def test_traceable_layers_are_leaf_conv_pool_and_activation_maps() -> None:
    layers = [{"name": "c", "leaf": True, "kind": "conv", "type": "Conv2d", "output_shape": [4, 8, 8]},
              {"name": "b", "leaf": False, "kind": "conv", "type": "Sequential", "output_shape": [4, 8, 8]},
              {"name": "s", "leaf": True, "kind": "activation", "type": "Softmax", "output_shape": [4, 8, 8]},
              {"name": "n", "leaf": True, "kind": "norm", "type": "BatchNorm2d", "output_shape": [4, 8, 8]},
              {"name": "r", "leaf": True, "kind": "activation", "type": "ReLU", "output_shape": [16]},
              {"name": "p", "leaf": True, "kind": "pool", "type": "MaxPool2d", "output_shape": [4, 4, 4]}]
    assert run_js("traceable.js", "m.traceableLayers(arg).map((l) => l.name)", {"layers": layers}) == ["c", "p"]
