// Grad-CAM taken apart, under the open class: the averaged-gradient weights α_k as a sorted bar chart,
// the channels A^k that contribute most (each with its α_k), their weighted sum and its ReLU — all drawn
// from …/saliency/gradcam-steps.json + .npy, so every number is the server's (checked against PyTorch).

import { el, isAbort } from '../dom.js';
import { formatCell, formatPercent } from '../common/format.js';
import { parseNpy } from '../common/npy.js';
import { COLOURS, clear, drawLegend, drawMap, label, makeScale, textFloor } from '../common/canvas.js';
import { redrawWhenResized } from '../common/fit-canvas.js';
import { explainButton } from '../common/explanation-panel.js';

const TOP = 6;
const BAR_W = 900;
const BAR_H = 200;
const MAP_PX = 120;

export function createGradcamSteps(parent) {
  const heading = el('h2', { text: 'How Grad-CAM made this map' });
  const status = el('p', { className: 'hint', attrs: { role: 'status' } });
  const formula = el('p', { className: 'gc-formula' });
  const bars = el('canvas', { className: 'gc-bars', width: BAR_W, height: BAR_H, attrs: { role: 'img', 'aria-label': 'The weights α_k of every channel, sorted' } });
  const barNote = el('p', { className: 'hint gc-bar-note' });
  const maps = el('div', { className: 'gc-maps' });
  const sum = el('div', { className: 'gc-maps gc-result' });
  const body = el('div', { className: 'gc-body' }, [
    el('h3', { text: '1 · One weight per channel: α_k = mean over i, j of ∂y^c / ∂A^k_ij' }), formula, bars, barNote,
    el('h3', { text: '2 · The channels that add the most: α_k × A^k' }), maps,
    el('h3', { text: '3 · Add them all up, keep the positive part' }), sum,
  ]);
  const card = el('section', { className: 'card gc-card', attrs: { 'aria-label': 'Grad-CAM step by step' } }, [
    el('div', { className: 'card-head' }, [heading, explainButton('gradcam')]), status, body,
  ]);
  parent.append(card);
  let abort = null;
  let key = null;
  let drawn = null; // the steps on the bars, redrawn when the chart's width changes
  const stopWatching = redrawWhenResized(bars, () => drawn && drawBars(drawn));

  function hide(text) {
    if (abort) abort.abort();
    key = null;
    card.hidden = !text;
    status.textContent = text || '';
    body.hidden = true;
  }

  /** Show the steps for ({api, modelId, imageId, weights, layer, target}); layer null: the model's default. */
  async function show({ api, modelId, imageId, weights, layer, target }) {
    const params = { layer: layer || undefined, target: target === null ? undefined : target, top: TOP, weights };
    const url = api.urls.modelPath(modelId, `/images/${encodeURIComponent(imageId)}/saliency/gradcam-steps.json`, params);
    if (url === key) return;
    key = url;
    if (abort) abort.abort();
    abort = new AbortController();
    const mine = abort;
    card.hidden = false;
    body.hidden = true;
    status.textContent = 'Computing the steps of Grad-CAM…';
    try {
      const steps = await api.getJson(url, { signal: mine.signal });
      const response = await api.request(steps.maps_url, { signal: mine.signal });
      const stack = parseNpy(await response.arrayBuffer());
      if (abort !== mine) return;
      render(steps, stack);
      status.textContent = '';
      body.hidden = false;
    } catch (err) {
      if (isAbort(err) || abort !== mine) return;
      key = null;
      status.textContent = `The steps could not be computed: ${err.message}`;
    }
  }

  function render(steps, stack) {
    const [K, h, w] = steps.shape;
    card.dataset.layer = steps.layer;
    card.dataset.target = String(steps.target);
    heading.textContent = `How Grad-CAM made the map of “${steps.label}” at ${steps.layer}`;
    const terms = steps.top.map((t, i) => `${i && t.alpha >= 0 ? '+ ' : i ? '− ' : t.alpha < 0 ? '−' : ''}${formatCell(Math.abs(t.alpha), 3)}·A${sup(t.channel)}`);
    const rest = steps.rest.channels ? ` + (${steps.rest.channels} more channel${steps.rest.channels > 1 ? 's' : ''})` : '';
    formula.textContent = `y^c = logit of “${steps.label}” = ${formatCell(steps.logit, 3)} (p = ${formatPercent(steps.probability)}). `
      + `${K} channels of ${h}×${w}: L = ReLU(${terms.join(' ')}${rest})`;
    formula.dataset.terms = JSON.stringify(steps.top.map((t) => ({ channel: t.channel, alpha: t.alpha })));
    drawBars(steps);
    maps.replaceChildren(...steps.top.map((t, i) => mapFigure(stack, i, h, w, t)));
    const S = slice(stack, steps.top.length, h, w);
    const R = slice(stack, steps.top.length + 1, h, w);
    sum.replaceChildren(
      figure(S, h, w, makeScale(steps.weighted_sum.min, steps.weighted_sum.max), `Σ_k α_k A^k (all ${K})`,
        `from ${formatCell(steps.weighted_sum.min, 3)} to ${formatCell(steps.weighted_sum.max, 3)}`, 'sum'),
      el('span', { className: 'gc-op', text: '→ ReLU →' }),
      figure(R, h, w, makeScale(0, Math.max(steps.relu.max, 1e-12)), 'ReLU: negatives set to 0',
        `${Math.round(steps.relu.positive_fraction * 100)}% of positions positive; max ${formatCell(steps.relu.max, 3)}`, 'relu'),
      el('p', { className: 'hint gc-final-note', text: 'This ReLU map, placed on the picture by receptive field and scaled to 0…1, is the map above.' }),
    );
  }

  function drawBars(steps) {
    drawn = steps;
    const g = bars.getContext('2d');
    clear(g, BAR_W, BAR_H);
    const order = steps.alpha_order;
    const values = order.map((i) => steps.alphas[i]);
    const hi = Math.max(...values, 0);
    const lo = Math.min(...values, 0);
    const span = Math.max(hi - lo, 1e-12);
    // type at least the page's smallest text on screen (the chart is shown narrower than it is drawn)
    const f = Math.max(13, textFloor(g));
    const left = Math.max(70, 4.5 * f);
    const right = BAR_W - 10;
    const top = 14;
    const bottom = BAR_H - 2.4 * f - 6;
    const zeroY = top + ((hi - 0) / span) * (bottom - top);
    const step = (right - left) / values.length;
    const shown = new Set(steps.top.map((t) => t.channel));
    const numbered = step >= 1.6 * f; // a channel number under each bar when they fit side by side
    values.forEach((v, i) => {
      const y = top + ((hi - v) / span) * (bottom - top);
      g.fillStyle = shown.has(order[i]) ? (v >= 0 ? '#b2182b' : '#2166ac') : (v >= 0 ? '#f4a582' : '#92c5de');
      g.fillRect(left + i * step + (step > 3 ? 1 : 0), Math.min(y, zeroY), Math.max(step - (step > 3 ? 2 : 0), 0.6), Math.max(Math.abs(zeroY - y), 1));
      if (numbered) label(g, String(order[i]), left + (i + 0.5) * step, bottom + f + 2, { size: f, weight: 400, colour: COLOURS.ink2, align: 'center' });
    });
    g.strokeStyle = COLOURS.ink2;
    g.beginPath();
    g.moveTo(left, zeroY);
    g.lineTo(right, zeroY);
    g.stroke();
    label(g, formatCell(hi, 3), left - 6, top + f * 0.8, { size: f, weight: 400, colour: COLOURS.ink2, align: 'right' });
    label(g, '0', left - 6, zeroY + f * 0.35, { size: f, weight: 400, colour: COLOURS.ink2, align: 'right' });
    if (lo < 0) label(g, formatCell(lo, 3), left - 6, bottom, { size: f, weight: 400, colour: COLOURS.ink2, align: 'right' });
    label(g, numbered ? 'channel k, sorted by α_k' : `${values.length} channels, sorted by α_k (dark: the ${steps.top.length} shown below)`,
      (left + right) / 2, BAR_H - 4, { size: f, weight: 400, colour: COLOURS.ink2, align: 'center', maxWidth: right - left });
    bars.dataset.order = JSON.stringify(order);
    const pos = values.filter((v) => v > 0).length;
    barNote.textContent = `${pos} of ${values.length} channels have α_k > 0 (their presence raises the score of “${steps.label}”), `
      + `${values.length - pos} have α_k ≤ 0. Largest α_k = ${formatCell(hi, 4)} (channel ${order[0]}), smallest = ${formatCell(lo, 4)} (channel ${order[order.length - 1]}).`;
  }

  function mapFigure(stack, i, h, w, t) {
    const scale = makeScale(Math.min(t.min, 0), Math.max(t.max, 1e-12));
    return figure(slice(stack, i, h, w), h, w, scale, `A${sup(t.channel)} × α = ${formatCell(t.alpha, 4)}`,
      `α_k·ΣA^k = ${formatCell(t.contribution, 3)}`, `channel-${t.channel}`);
  }

  return { show, hide, dispose: () => { stopWatching(); if (abort) abort.abort(); } };
}

function slice(stack, i, h, w) {
  return stack.data.subarray(i * h * w, (i + 1) * h * w);
}

function figure(values, h, w, scale, title, caption, name) {
  const canvas = el('canvas', { width: MAP_PX + 20, height: MAP_PX + 44, attrs: { role: 'img', 'aria-label': `${title}: ${caption}` } });
  const g = canvas.getContext('2d');
  clear(g, canvas.width, canvas.height);
  drawMap(g, { x: 10, y: 2, w: MAP_PX, h: MAP_PX }, { rows: h, cols: w, values: (r, c) => values[r * w + c], scale, numbers: false });
  drawLegend(g, scale, 10, MAP_PX + 8, MAP_PX, '', 12);
  return el('figure', { className: 'gc-figure', dataset: { name } }, [canvas, el('figcaption', {}, [el('strong', { text: title }), el('br'), caption])]);
}

const SUP = { 0: '⁰', 1: '¹', 2: '²', 3: '³', 4: '⁴', 5: '⁵', 6: '⁶', 7: '⁷', 8: '⁸', 9: '⁹' };
function sup(n) {
  return String(n).split('').map((d) => SUP[d]).join('');
}
