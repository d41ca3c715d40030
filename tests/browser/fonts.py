"""Measure the size of every text the page shows, in CSS px: DOM text and text drawn on canvases.

Reusable by any browser test: add ``FONT_PROBE`` with ``page.add_init_script(FONT_PROBE)`` before the page
loads, bring a view to the screen, then ``small_texts(page, 16)`` lists every visible text smaller than 16 CSS
px and ``cut_texts(page)`` every text cut off with an ellipsis. The probe wraps
``CanvasRenderingContext2D.prototype.fillText``/``strokeText`` (independently of the app's code) and keeps, per
canvas, the texts drawn since the canvas was last cleared (a full ``clearRect`` or a new width/height); a
font is converted to CSS px by the context's transform (``getTransform()``) and by the canvas's displayed
size over its backing size, read when the test asks.

To check a new view, add it to ``VIEW_CASES`` in tests/browser/test_font_sizes.py (one line).
"""

from __future__ import annotations

FONT_PROBE = """
(() => {
  const texts = new Map();  // canvas -> [{text, px (font px × transform scale, backing px)}]
  window.__canvasTexts = texts;
  const reset = (canvas) => texts.set(canvas, []);
  for (const name of ['fillText', 'strokeText']) {
    const original = CanvasRenderingContext2D.prototype[name];
    CanvasRenderingContext2D.prototype[name] = function (text, ...rest) {
      const m = /(\\d+(?:\\.\\d+)?)px/.exec(this.font);
      const t = this.getTransform();
      // the vertical scale of the transform (a font's height goes through c and d)
      const scale = Math.min(Math.hypot(t.a, t.b), Math.hypot(t.c, t.d));
      if (this.canvas instanceof HTMLCanvasElement) {
        if (!texts.has(this.canvas)) reset(this.canvas);
        texts.get(this.canvas).push({ text: String(text), px: (m ? Number(m[1]) : 0) * scale });
      }
      return original.call(this, text, ...rest);
    };
  }
  // a clearRect or fillRect over the whole canvas starts a new picture: forget the texts under it
  const covers = (ctx, x, y, w, h) => {
    const t = ctx.getTransform();
    const c = ctx.canvas;
    return c instanceof HTMLCanvasElement && t.b === 0 && t.c === 0
      && t.a * x + t.e <= 0 && t.d * y + t.f <= 0 && t.a * (x + w) + t.e >= c.width && t.d * (y + h) + t.f >= c.height;
  };
  for (const name of ['clearRect', 'fillRect']) {
    const original = CanvasRenderingContext2D.prototype[name];
    CanvasRenderingContext2D.prototype[name] = function (x, y, w, h) {
      if (covers(this, x, y, w, h)) reset(this.canvas);
      return original.call(this, x, y, w, h);
    };
  }
  for (const prop of ['width', 'height']) {
    const descriptor = Object.getOwnPropertyDescriptor(HTMLCanvasElement.prototype, prop);
    Object.defineProperty(HTMLCanvasElement.prototype, prop, {
      configurable: true, enumerable: descriptor.enumerable,
      get() { return descriptor.get.call(this); },
      set(value) { reset(this); descriptor.set.call(this, value); },
    });
  }
})();
"""

# Every visible text on the page with its size in CSS px and where it is: DOM text nodes by their computed
# font size, canvas texts by the probe's record scaled to the canvas's displayed size.
READ_TEXTS = """
() => {
  const out = [];
  const visible = (element) => element.checkVisibility({ checkOpacity: true, checkVisibilityCSS: true });
  const where = (element) => {
    const parts = [];
    for (let e = element; e && e !== document.body && parts.length < 4; e = e.parentElement) {
      parts.unshift(e.id ? `#${e.id}` : e.tagName.toLowerCase() + (typeof e.className === 'string' && e.className
        ? '.' + e.className.trim().split(/\\s+/)[0] : ''));
      if (e.id) break;
    }
    return parts.join(' > ');
  };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.textContent.trim();
    const parent = node.parentElement;
    if (!text || !parent || !visible(parent) || parent.closest('option, script, style, template')) continue;
    const range = document.createRange();
    range.selectNodeContents(node);
    const rects = [...range.getClientRects()].filter((r) => r.width > 0 && r.height > 0);
    if (!rects.length) continue;
    let px = parseFloat(getComputedStyle(parent).fontSize);
    if (parent instanceof SVGGraphicsElement) {  // SVG text scales with its picture
      const m = parent.getScreenCTM();
      if (m) px *= Math.min(Math.hypot(m.a, m.b), Math.hypot(m.c, m.d));
    }
    out.push({ kind: 'text', text: text.slice(0, 60), px,
      where: where(parent), top: rects[0].top });
  }
  for (const select of document.querySelectorAll('select')) {
    if (!visible(select) || !select.getClientRects().length) continue;
    const option = select.selectedOptions[0];
    if (option && option.textContent.trim()) out.push({ kind: 'select', text: option.textContent.trim().slice(0, 60),
      px: parseFloat(getComputedStyle(select).fontSize), where: where(select), top: select.getBoundingClientRect().top });
  }
  for (const [canvas, texts] of window.__canvasTexts || []) {
    if (!canvas.isConnected || !visible(canvas) || !canvas.width || !canvas.height) continue;
    const r = canvas.getBoundingClientRect();
    if (!r.width || !r.height) continue;
    // CSS px per backing px (content box: the border and padding do not scale the picture)
    const s = getComputedStyle(canvas);
    const w = r.width - parseFloat(s.borderLeftWidth) - parseFloat(s.borderRightWidth) - parseFloat(s.paddingLeft) - parseFloat(s.paddingRight);
    const h = r.height - parseFloat(s.borderTopWidth) - parseFloat(s.borderBottomWidth) - parseFloat(s.paddingTop) - parseFloat(s.paddingBottom);
    const scale = Math.min(w / canvas.width, h / canvas.height);
    for (const t of texts) {
      if (!t.text.trim()) continue;
      out.push({ kind: 'canvas', text: t.text.slice(0, 60), px: t.px * scale, where: where(canvas), top: r.top });
    }
  }
  return out;
}
"""

# Elements whose text is cut off: CSS text-overflow: ellipsis with more text than room (unless the element's
# title holds the whole text), and canvas or DOM text where an ellipsis follows a number ("-8.4…").
READ_CUT = """
() => {
  const out = [];
  for (const e of document.querySelectorAll('body *')) {
    if (!e.checkVisibility({ checkOpacity: true, checkVisibilityCSS: true })) continue;
    const s = getComputedStyle(e);
    const full = e.textContent.trim();
    // a line cut on purpose, with the whole of it one hover away (title), is not counted
    if (s.textOverflow === 'ellipsis' && e.scrollWidth > e.clientWidth + 1 && full && !(e.title || '').includes(full)
        && e.tagName !== 'SELECT')
      out.push({ kind: 'css-ellipsis', text: e.textContent.trim().slice(0, 60), where: e.className || e.tagName });
    // text of its own clipped at its box's edge (overflow hidden or clip), ellipsis or not
    else if (['hidden', 'clip'].includes(s.overflowX) && e.scrollWidth > e.clientWidth + 1 && e.tagName !== 'SELECT'
        && !(e.title || '').includes(full) && [...e.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim()))
      out.push({ kind: 'clipped', text: full.slice(0, 60), where: e.className || e.tagName });
  }
  const cut = /(^|\\s|#)[-−]?\\d+(\\.\\d*)?…(?!\\d)/;  // '-8.4…' (not a range such as '0…1')
  for (const [canvas, texts] of window.__canvasTexts || []) {
    if (!canvas.isConnected || !canvas.checkVisibility()) continue;
    for (const t of texts) if (cut.test(t.text)) out.push({ kind: 'canvas', text: t.text, where: canvas.id || canvas.className });
  }
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const parent = node.parentElement;
    if (parent && cut.test(node.textContent) && parent.checkVisibility())
      out.push({ kind: 'text', text: node.textContent.trim().slice(0, 60), where: parent.className || parent.tagName });
  }
  return out;
}
"""


def visible_texts(page) -> list[dict]:
    """Every visible text on the page: {kind: text|select|canvas, text, px (CSS px), where, top}."""
    return page.evaluate(READ_TEXTS)


def small_texts(page, minimum: float) -> list[dict]:
    """The visible texts smaller than ``minimum`` CSS px (0.05 px of rounding allowed)."""
    return [t for t in visible_texts(page) if t["px"] < minimum - 0.05]


def cut_texts(page) -> list[dict]:
    """The texts cut off with an ellipsis."""
    return page.evaluate(READ_CUT)


def describe(texts: list[dict], limit: int = 25) -> str:
    """A readable list for an assertion message, smallest first."""
    seen, rows = set(), []
    for t in sorted(texts, key=lambda t: t.get("px", 0)):
        key = (round(t.get("px", 0), 1), t["kind"], t["where"], t["text"])
        if key not in seen:
            seen.add(key)
            rows.append(t)
    rows = rows[:limit]
    return "\n".join(f"{t.get('px', 0):5.1f}px {t['kind']:6} {t['where']}: {t['text']!r}" for t in rows)
