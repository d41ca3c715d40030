// The Saliency view's toolbar: method, layer, colour map, opacity, and a search over every class label.

import { el, listen, disposer } from '../dom.js';
import { filterLabels, spatialLayers } from './saliency-math.js';

const FAMILIES = [
  ['cam', 'Class activation maps'],
  ['gradient', 'Gradient methods'],
];

/**
 * `parent` gets the toolbar; `searchParent` (the top-classes card's head) gets the class search.
 * onChange(changes) gets URL-state changes; onOpacity(0..1) follows the slider live.
 */
export function createControls(parent, searchParent, { onChange, onOpacity }) {
  const bag = disposer();
  const method = el('select', { id: 'sal-method', className: 'sal-select' });
  const layer = el('select', { id: 'sal-layer', className: 'sal-select' });
  const cmap = el('select', { id: 'sal-cmap', className: 'sal-select' });
  const opacity = el('input', { type: 'range', id: 'sal-opacity', min: '0', max: '100', step: '5', className: 'sal-opacity' });
  const opacityText = el('output', { className: 'sal-opacity-text', attrs: { for: 'sal-opacity' } });
  const search = el('input', {
    type: 'search', id: 'sal-search', className: 'sal-search', placeholder: 'Any class…', autocomplete: 'off',
    attrs: { 'aria-controls': 'sal-search-results' },
  });
  const results = el('ul', { id: 'sal-search-results', className: 'sal-search-results', attrs: { role: 'listbox' } });
  results.hidden = true;
  const about = el('p', { className: 'sal-method-about' });
  const field = (label, id, control) =>
    el('div', { className: 'sal-field' }, [el('label', { className: 'toolbar-label', attrs: { for: id }, text: label }), control]);
  parent.append(
    el('div', { className: 'sal-toolbar' }, [
      field('Method', 'sal-method', method),
      field('Layer', 'sal-layer', layer),
      field('Colours', 'sal-cmap', cmap),
      field('Opacity', 'sal-opacity', el('span', { className: 'sal-opacity-wrap' }, [opacity, opacityText])),
    ]),
    about,
  );
  searchParent.append(
    el('div', { className: 'sal-search-field' }, [
      el('label', { className: 'toolbar-label', attrs: { for: 'sal-search' }, text: 'Explain any class' }),
      search,
      results,
    ]),
  );

  let labels = [];
  let methods = [];
  bag.add(listen(method, 'change', () => onChange({ method: method.value })));
  bag.add(listen(layer, 'change', () => onChange({ cam_layer: layer.value })));
  bag.add(listen(cmap, 'change', () => onChange({ cmap: cmap.value })));
  bag.add(listen(opacity, 'input', () => {
    opacityText.textContent = `${opacity.value}%`;
    onOpacity(Number(opacity.value) / 100);
  }));
  bag.add(listen(search, 'input', () => showResults(filterLabels(labels, search.value))));
  bag.add(listen(search, 'keydown', (e) => {
    if (e.key === 'Enter') {
      const first = results.querySelector('button');
      if (first) first.click();
    } else if (e.key === 'Escape') {
      search.value = '';
      showResults([]);
    }
  }));
  bag.add(listen(results, 'click', (e) => {
    const b = e.target.closest('button');
    if (!b) return;
    search.value = '';
    showResults([]);
    onChange({ target: b.dataset.index });
  }));

  function showResults(found) {
    results.replaceChildren(
      ...found.map(({ index, label }) =>
        el('li', { attrs: { role: 'option' } }, [
          el('button', { type: 'button', dataset: { index: String(index) } }, [
            el('span', { className: 'sal-result-index', text: `#${index}` }),
            ` ${label}`,
          ]),
        ]),
      ),
    );
    results.hidden = found.length === 0;
  }

  /** Fill the pickers for a model and the server's method list. */
  function render({ model, methodList, colormaps }) {
    methods = methodList;
    labels = model.labels || [];
    method.replaceChildren(
      ...FAMILIES.map(([family, title]) =>
        el('optgroup', { attrs: { label: title } },
          methodList.filter((m) => m.family === family).map((m) => el('option', { value: m.name, text: m.title }))),
      ),
    );
    layer.replaceChildren(
      ...spatialLayers(model).map((l) =>
        el('option', { value: l.name, text: `${l.name} · ${l.type} · ${l.output_shape.join('×')}` }),
      ),
    );
    cmap.replaceChildren(...Object.keys(colormaps).map((name) => el('option', { value: name, text: name })));
  }

  /** Reflect the URL state in the controls. */
  function show(st) {
    method.value = st.method;
    layer.value = st.layer;
    const spec = methods.find((m) => m.name === st.method);
    layer.disabled = !spec || !spec.uses_layer;
    layer.title = layer.disabled ? `${spec ? spec.title : 'This method'} works on the input pixels, not a layer` : '';
    about.textContent = spec ? `${spec.summary} Cost: ${spec.cost}.` : '';
    cmap.value = st.cmap;
    opacity.value = String(Math.round(st.opacity * 100));
    opacityText.textContent = `${opacity.value}%`;
  }

  /** Class labels for the search (the model JSON has none, so the view passes them in). */
  function setLabels(list) {
    labels = list;
  }

  return { render, show, setLabels, dispose: () => bag.run() };
}
