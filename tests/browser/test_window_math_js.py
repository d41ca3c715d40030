"""The page's window-math.js, run in Chromium, against server/services/step_through/window_math.py on the same cases
(every padding kind, strides, dilations, rectangular kernels, ceil mode), and its receptive-field box."""

from __future__ import annotations

import itertools
import math

import pytest

from server.services.step_through import window_math as wm

pytestmark = pytest.mark.browser

PADDINGS = ["valid", "same", "full", 0, 1, 3, [0, 2], [2, 1]]


def _cases() -> list[dict]:
    cases = []
    for (h, w), (kh, kw), s, d, p in itertools.product(((5, 5), (6, 9), (1, 4), (16, 7)), ((1, 1), (3, 3), (2, 3), (5, 4)),
                                                       (1, 2, 3), (1, 2), PADDINGS):
        cases.append({"in": [h, w], "k": [kh, kw], "stride": s, "dilation": d, "padding": [p, p], "ceil": False})
    for h, k, s, p in itertools.product((6, 7, 13), (2, 3), (2, 3), (0, 1)):
        if 2 * p <= k:
            cases.append({"in": [h, h + 1], "k": [k, k], "stride": s, "dilation": 1, "padding": [p, p], "ceil": True})
    cases.append({"in": [4, 4], "k": [3, 3], "stride": 1, "dilation": 1, "padding": [0, 2, 1, 0], "ceil": False})
    cases.append({"in": [7, 5], "k": [3, 2], "stride": [2, 1], "dilation": [1, 2],
                  "padding": {"top": 1, "bottom": 0, "left": 2, "right": 1}, "ceil": False})
    return cases


def _python(case: dict) -> dict:
    padding = case["padding"]
    if isinstance(padding, list) and len(padding) == 2:
        padding = tuple(tuple(p) if isinstance(p, list) else p for p in padding)
    window = wm.window2d(tuple(case["in"]), tuple(case["k"]), stride=case["stride"], padding=padding,
                         dilation=case["dilation"], ceil_mode=case["ceil"])
    oh, ow = window.out_shape
    cells = [[list(c) for c in window.cells(y, x)] for y in range(oh) for x in range(ow)]
    return {"out": [oh, ow], "padding": window.padding(), "cells": cells, "tiling": window.tiling_message(),
            "formula": window.formula()}


JS_RUN = """async (cases) => {
  const m = await import('/static/js/common/window-math.js');
  return cases.map((c) => {
    const w = m.window2d(c.in, c.k, { stride: c.stride, padding: c.padding, dilation: c.dilation, ceilMode: c.ceil });
    const cells = [];
    for (let y = 0; y < w.outShape[0]; y += 1) {
      for (let x = 0; x < w.outShape[1]; x += 1) {
        cells.push(w.cells(y, x).map((t) => [t.ky, t.kx, t.iy, t.ix, t.pad]));
      }
    }
    return { out: w.outShape, padding: w.padding, cells, tiling: w.tilingMessage(), formula: w.formula() };
  });
}"""


def test_js_window_math_equals_python(page) -> None:
    page.goto("/")  # the module is imported on its own; the page only gives it an origin
    cases = _cases()
    assert len(cases) > 700
    results = []
    for start in range(0, len(cases), 200):
        results.extend(page.evaluate(JS_RUN, cases[start:start + 200]))
    for case, got in zip(cases, results):
        assert got == _python(case), case


def test_js_receptive_box(page) -> None:
    page.goto("/")
    got = page.evaluate("""async () => {
      const m = await import('/static/js/common/window-math.js');
      const field = { size: [11, 11], jump: [2, 2], start: [3, 3] };
      return {
        inside: m.receptiveBox(field, 5, 4, [28, 28]),
        corner: m.receptiveBox(field, 0, 0, [28, 28]),
        sameEven: m.resolvePadding('same', 7, 2, 1, 1),
        sameStride: m.resolvePadding('same', 28, 5, 2, 1),
        numberText: m.resolvePadding('2', 7, 3),
      };
    }""")
    # unit (5, 4) is centred at 3 + 5·2 = 13 (rows) and 3 + 4·2 = 11 (cols), 11 px wide: ±5
    assert got["inside"] == {"top": 8, "bottom": 18, "left": 6, "right": 16, "clipped": False}
    assert got["corner"] == {"top": 0, "bottom": 8, "left": 0, "right": 8, "clipped": True}
    assert got["sameEven"] == list(wm.resolve_padding("same", 7, 2, 1, 1))
    assert got["sameStride"] == list(wm.resolve_padding("same", 28, 5, 2, 1))
    assert got["numberText"] == [2, 2]
    assert math.isclose(13 - 5, got["inside"]["top"])
