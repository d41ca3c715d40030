// Cover part of the image: drag a patch (grey, blurred or noise; size on a slider) over the model's input
// and watch the top-5 and the chosen class's probability. One update answers the newest position: the
// positions the pointer passed while a request was on its way go together in the next request and the
// latest one is shown. Afterwards, one click turns every visited position into an occlusion map.
// URL keys: fill, size, py, px (the patch's last place), probe_class.

import { el, isAbort, listen, disposer } from '../dom.js';
import { createPredictionsChart } from '../common/predictions-chart.js';
import { formatPercent } from '../common/format.js';
import { createProbeQueue } from './probe-queue.js';

const DISPLAY = 320; // CSS pixels of the picture's longer side
const MAP_LIMIT = 256;

export function create(host, explain) {
  const fill = el('select', { className: 'xp-fill', attrs: { 'aria-label': 'Patch fill' } },
    ['grey', 'blur', 'noise'].map((f) => el('option', { value: f, text: f })));
  const size = el('input', { type: 'range', min: '1', className: 'xp-size', attrs: { 'aria-label': 'Patch size' } });
  const sizeText = el('output', { className: 'xp-size-text' });
  const classSelect = el('select', { className: 'xp-class', attrs: { 'aria-label': 'Class to watch' } });
  const canvas = el('canvas', { className: 'xp-probe-canvas', width: DISPLAY, height: DISPLAY, attrs: { 'aria-label': 'Drag the patch over the picture' } });
  const watched = el('p', { className: 'xp-watched', attrs: { 'aria-live': 'polite' } });
  const mapButton = el('button', { type: 'button', className: 'xp-map-button', text: 'Turn the visited positions into an occlusion map' });
  const mapImage = el('img', { className: 'xp-map', alt: 'Occlusion map of the visited positions', hidden: true });
  const mapNote = el('p', { className: 'card-note xp-map-note' });
  const chartHost = el('div');
  host.append(
    el('div', { className: 'xp-controls' }, [el('label', {}, ['Patch ', fill]), el('label', {}, ['Size ', size, sizeText]),
      el('label', {}, ['Watch class ', classSelect])]),
    el('div', { className: 'xp-grid' }, [
      el('div', { className: 'xp-pane' }, [canvas, el('p', { className: 'card-note', text: 'Drag over the picture; the patch follows the pointer.' })]),
      el('div', { className: 'xp-pane' }, [watched, chartHost]),
      el('div', { className: 'xp-pane' }, [mapButton, mapImage, mapNote]),
    ]),
  );
  const chart = createPredictionsChart(chartHost);
  const bag = disposer();
  const ctx2d = canvas.getContext('2d');
  const s = { ctx: null, key: null, picture: null, clean: null, visited: [], queue: null, scale: 1, inputKey: null, dragging: false };
  const set = (changes, replace = false) => s.ctx.state.set(changes, { replace });
  const input = () => s.ctx.model.input;
  const state = () => {
    const st = s.ctx.state;
    const side = Math.max(input().height, input().width);
    const sz = Math.min(side, Math.max(1, Number(st.get('size')) || Math.max(2, Math.round(side / 5))));
    return { fill: ['grey', 'blur', 'noise'].includes(st.get('fill')) ? st.get('fill') : 'grey', size: sz,
      py: st.get('py') === undefined ? null : Number(st.get('py')), px: st.get('px') === undefined ? null : Number(st.get('px')),
      cls: st.get('probe_class') === undefined ? null : Number(st.get('probe_class')) };
  };

  fill.onchange = () => set({ fill: fill.value });
  size.oninput = () => { sizeText.textContent = `${size.value} px`; draw(); };
  size.onchange = () => set({ size: size.value });
  classSelect.onchange = () => set({ probe_class: classSelect.value });

  function patchAt(event) {
    const rect = canvas.getBoundingClientRect();
    const q = state();
    const x = Math.round(((event.clientX - rect.left) / rect.width) * input().width - q.size / 2);
    const y = Math.round(((event.clientY - rect.top) / rect.height) * input().height - q.size / 2);
    const side = Number(size.value) || q.size;
    const clamp = (v, n) => Math.max(1 - side, Math.min(n - 1, v));
    return { y: clamp(y, input().height), x: clamp(x, input().width), size: side, fill: q.fill };
  }
  bag.add(listen(canvas, 'pointerdown', (event) => {
    s.dragging = true;
    canvas.setPointerCapture(event.pointerId);
    move(event);
  }));
  bag.add(listen(canvas, 'pointermove', (event) => { if (s.dragging) move(event); }));
  bag.add(listen(canvas, 'pointerup', (event) => {
    if (!s.dragging) return;
    s.dragging = false;
    const p = patchAt(event);
    set({ py: p.y, px: p.x }, true);
  }));
  function move(event) {
    const p = patchAt(event);
    s.last = p;
    draw();
    s.queue.push(p);
  }

  function draw() {
    if (!s.picture) return;
    ctx2d.imageSmoothingEnabled = false;
    ctx2d.drawImage(s.picture, 0, 0, canvas.width, canvas.height);
    const p = s.last;
    if (!p) return;
    const k = canvas.width / input().width;
    ctx2d.fillStyle = p.fill === 'grey' ? 'rgba(128,128,128,0.9)' : p.fill === 'blur' ? 'rgba(200,200,255,0.55)' : 'rgba(255,255,255,0.35)';
    ctx2d.fillRect(p.x * k, p.y * k, p.size * k, p.size * k);
    ctx2d.strokeStyle = '#ffcc00';
    ctx2d.lineWidth = 2;
    ctx2d.strokeRect(p.x * k, p.y * k, p.size * k, p.size * k);
  }

  function showResult(patch, result, answer) {
    s.visited.push(patch);
    if (s.visited.length > MAP_LIMIT) s.visited.shift();
    chart.show(result.predictions, `probe|${patch.y}|${patch.x}|${patch.size}|${patch.fill}`);
    const cls = result.classes && result.classes[0];
    const clean = answer.clean_classes && answer.clean_classes[0];
    if (cls && clean) {
      watched.textContent = `“${cls.label}”: ${formatPercent(clean.probability)} without the patch, ${formatPercent(cls.probability)} with it at y=${patch.y}, x=${patch.x}.`;
      watched.dataset.probability = String(cls.probability);
      explain([['This experiment', `A ${patch.size}×${patch.size} ${patch.fill} patch (model-input pixels) hides part of the picture. `
        + `The network's probability for “${cls.label}” is ${formatPercent(cls.probability)} with the patch here, ${formatPercent(clean.probability)} without it: `
        + 'where the probability drops most, the network relied on what the patch hides.'],
      ['Occlusion map', `${s.visited.length} positions visited so far. The map averages, for each pixel, the drop of the probability over the patches that covered it (Zeiler & Fergus' occlusion).`]]);
    }
    host.dataset.updates = String(Number(host.dataset.updates || 0) + 1);
  }

  mapButton.onclick = async () => {
    if (!s.visited.length) { mapNote.textContent = 'Drag the patch over the picture first.'; return; }
    const { model, imageId, weights, api } = s.ctx;
    const q = state();
    const body = { patches: s.visited.slice(-MAP_LIMIT).map(({ y, x, size: sz, fill: f }) => ({ y, x, size: sz, fill: f })) };
    if (q.cls !== null) body.target = q.cls;
    mapNote.textContent = 'Computing…';
    try {
      const response = await api.request(api.urls.modelPath(model.id, `/images/${imageId}/occlusion-probe/map.png`, { weights }),
        { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
      const [low, high] = (response.headers.get('X-ConvScope-Range') || '0,0').split(',').map(Number);
      const coverage = Number(response.headers.get('X-ConvScope-Coverage') || 0);
      if (mapImage.src) URL.revokeObjectURL(mapImage.src);
      mapImage.src = URL.createObjectURL(await response.blob());
      mapImage.hidden = false;
      mapNote.textContent = `${body.patches.length} positions; colour: mean drop of the probability from ${low} (dark) to ${high.toPrecision(3)} (bright); `
        + `${Math.round(coverage * 100)} % of the picture covered at least once.`;
      mapNote.dataset.high = String(high);
    } catch (err) {
      mapNote.textContent = err.message;
    }
  };

  async function loadImage() {
    const { model, imageId, weights, api } = s.ctx;
    const key = `${model.id}|${weights}|${imageId}`;
    if (key === s.inputKey) return;
    s.inputKey = key;
    s.visited = [];
    const blob = await api.blob(api.urls.modelPath(model.id, `/images/${imageId}/input.png`, { weights }));
    s.picture = await createImageBitmap(blob);
    const k = DISPLAY / Math.max(input().height, input().width);
    canvas.width = Math.round(input().width * k);
    canvas.height = Math.round(input().height * k);
    draw();
  }

  async function loadClasses() {
    const { model, imageId, weights, api } = s.ctx;
    const answer = await api.predictions(model.id, imageId, weights, { topK: 5 });
    const q = state();
    s.clean = answer.predictions;
    const options = answer.predictions.map((p) => el('option', { value: String(p.index), text: `${p.label} (${formatPercent(p.probability)})` }));
    if (q.cls !== null && !answer.predictions.some((p) => p.index === q.cls)) options.push(el('option', { value: String(q.cls), text: `class ${q.cls}` }));
    classSelect.replaceChildren(...options);
    classSelect.value = String(q.cls !== null ? q.cls : answer.predictions[0].index);
    if (!s.last) {
      chart.show(answer.predictions, 'clean');
      watched.textContent = 'Without a patch. Drag over the picture to cover part of it.';
    }
  }

  return {
    update(ctx) {
      s.ctx = ctx;
      const q = state();
      fill.value = q.fill;
      size.max = String(Math.max(ctx.model.input.height, ctx.model.input.width));
      size.value = String(q.size);
      sizeText.textContent = `${q.size} px`;
      if (!ctx.imageId) { chart.empty('Pick or draw an image first.'); return; }
      const key = `${ctx.model.id}|${ctx.weights}|${ctx.imageId}`;
      if (!s.queue || s.queue.key !== key || s.queue.cls !== q.cls) {
        if (s.queue) s.queue.stop();
        s.queue = createProbeQueue(ctx, q.cls, showResult);
        s.queue.key = key;
      }
      Promise.all([loadImage(), loadClasses()]).then(() => {
        const cls = Number(classSelect.value);
        if (s.queue.cls === null) s.queue.cls = cls;
        if (q.py !== null && q.px !== null && !s.dragging) {
          s.last = { y: q.py, x: q.px, size: q.size, fill: q.fill };
          draw();
          s.queue.push(s.last);
        }
      }).catch((err) => { if (!isAbort(err)) chart.error(err.message); });
    },
    unmount() {
      bag.run();
      if (s.queue) s.queue.stop();
      if (mapImage.src) URL.revokeObjectURL(mapImage.src);
    },
  };
}
