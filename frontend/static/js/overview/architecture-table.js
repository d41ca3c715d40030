// The architecture table: layer, type (with its hyper-parameters), output shape, parameters and
// receptive field (size and jump, in input pixels), with the total. Leaf layers by default;
// containers (blocks, Sequential) on request, indented by depth.

import { el } from '../dom.js';
import { formatInt, formatShape } from '../common/format.js';

const KIND_ORDER = ['conv', 'pool', 'activation', 'norm', 'linear', 'other'];
const KIND_NAMES = {
  conv: 'convolution',
  pool: 'pooling',
  activation: 'activation',
  norm: 'normalisation',
  linear: 'linear',
  other: 'other',
};

const pair = (v) => (Array.isArray(v) ? v : [v, v]);
const square = (v) => {
  const [h, w] = pair(v);
  return h === w ? String(h) : `${h}×${w}`;
};

/** "5×5 · stride 2 · pad 1" for a conv or pool layer; '' for others. */
export function hyperText(layer) {
  if (layer.kernel_size === undefined || layer.kernel_size === null) return '';
  const [kh, kw] = pair(layer.kernel_size);
  const parts = [`${kh}×${kw}`];
  if (layer.stride !== undefined && square(layer.stride) !== '1') parts.push(`stride ${square(layer.stride)}`);
  if (layer.padding !== undefined && square(layer.padding) !== '0') parts.push(`pad ${square(layer.padding)}`);
  if (layer.dilation !== undefined && square(layer.dilation) !== '1') parts.push(`dilation ${square(layer.dilation)}`);
  if (layer.groups && layer.groups !== 1) parts.push(`groups ${layer.groups}`);
  return parts.join(' · ');
}

function receptiveCells(rf) {
  if (!rf) return [el('td', { className: 'num muted', text: '—' }), el('td', { className: 'num muted', text: '—' })];
  return [el('td', { className: 'num', text: square(rf.size) }), el('td', { className: 'num', text: square(rf.jump) })];
}

function layerRow(layer, showBlocks) {
  const hyper = hyperText(layer);
  // As a tree (blocks shown) a row names itself relative to its parent, indented by depth; the full
  // module name, the one the API takes, stays in the tooltip.
  const shownName = showBlocks ? layer.name.split('.').pop() : layer.name;
  // A model converted from ONNX or Keras also names the graph node each layer came from.
  const nameCell = el('td', { className: 'layer-name', title: layer.name }, [
    el('code', { text: shownName }),
    layer.onnx_node ? el('span', { className: 'onnx-node', text: `ONNX ${layer.onnx_node}` }) : null,
  ]);
  if (showBlocks) nameCell.classList.add(`depth-${Math.min(layer.depth, 6)}`);
  return el(
    'tr',
    { className: `kind-${layer.kind}${layer.leaf ? '' : ' is-container'}`, dataset: { layer: layer.name } },
    [
      nameCell,
      el('td', { className: 'layer-type' }, [
        el('span', { className: 'type-name', text: layer.type }),
        hyper ? el('span', { className: 'type-hyper', text: hyper }) : null,
      ]),
      el('td', { className: 'num', text: formatShape(layer.output_shape) }),
      el('td', { className: 'num', text: formatInt(layer.params) }),
      ...receptiveCells(layer.receptive_field),
    ],
  );
}

/**
 * @param {HTMLElement} container  where the toolbar and table go
 * @param {HTMLElement} legendSlot  where the colour legend of layer kinds goes (the card's head)
 * @param {(showBlocks: boolean) => void} onToggle  the user flipped "show blocks"
 */
export function createArchitectureTable(container, legendSlot, onToggle) {
  const checkbox = el('input', { type: 'checkbox', id: 'arch-show-blocks' });
  const legend = el('ul', { className: 'kind-legend', attrs: { 'aria-label': 'Layer kinds' } });
  legendSlot.append(legend);
  const toolbar = el('div', { className: 'table-toolbar' }, [
    el('span', { className: 'table-summary' }),
    el('label', { className: 'check', htmlFor: 'arch-show-blocks' }, [checkbox, ' Show blocks and containers']),
  ]);
  const table = el('table', { className: 'arch-table' });
  const scroller = el('div', { className: 'table-scroll' }, [table]);
  container.append(toolbar, scroller);
  const onChange = () => onToggle(checkbox.checked);
  checkbox.addEventListener('change', onChange);

  function render(model, { showBlocks }) {
    checkbox.checked = showBlocks;
    table.dataset.model = model.id;
    table.dataset.blocks = String(showBlocks);
    const layers = model.layers.filter((layer) => showBlocks || layer.leaf);
    const { channels, height, width } = model.input;
    const inputRow = el('tr', { className: 'kind-input', dataset: { layer: '' } }, [
      el('td', { className: 'layer-name' }, [el('code', { text: 'input' })]),
      el('td', { className: 'layer-type', text: 'Input' }),
      el('td', { className: 'num', text: formatShape([channels, height, width]) }),
      el('td', { className: 'num', text: '0' }),
      el('td', { className: 'num', text: '1' }),
      el('td', { className: 'num', text: '1' }),
    ]);
    const head = el('thead', {}, [
      el('tr', {}, [
        el('th', { text: 'Layer', scope: 'col' }),
        el('th', { text: 'Type', scope: 'col' }),
        el('th', { className: 'num', text: 'Output shape', scope: 'col' }),
        el('th', { className: 'num', text: 'Parameters', scope: 'col' }),
        el('th', { className: 'num', text: 'Receptive field', scope: 'col', title: 'Input pixels one output value sees' }),
        el('th', { className: 'num', text: 'Jump', scope: 'col', title: 'Input pixels between neighbouring output values' }),
      ]),
    ]);
    const leafParams = model.layers.filter((l) => l.leaf).reduce((sum, l) => sum + l.params, 0);
    const foot = el('tfoot', {}, [
      el('tr', {}, [
        el('th', { text: 'Total', scope: 'row' }),
        el('td', { text: `${model.layers.filter((l) => l.leaf).length} layers` }),
        el('td'),
        el('td', { className: 'num total-params', text: formatInt(model.total_params) }),
        el('td', { colSpan: 2 }),
      ]),
    ]);
    table.replaceChildren(head, el('tbody', {}, [inputRow, ...layers.map((l) => layerRow(l, showBlocks))]), foot);
    const note =
      leafParams === model.total_params
        ? ''
        : ` (${formatInt(model.total_params - leafParams)} held outside leaf layers)`;
    const kinds = KIND_ORDER.filter((kind) => model.layers.some((l) => l.leaf && l.kind === kind));
    legend.replaceChildren(...kinds.map((kind) => el('li', { className: `kind-${kind}`, text: KIND_NAMES[kind] })));
    toolbar.firstChild.textContent = `${formatInt(model.total_params)} parameters${note}`;
  }

  return {
    render,
    dispose() {
      checkbox.removeEventListener('change', onChange);
    },
  };
}
