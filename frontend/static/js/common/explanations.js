// What each view and each idea means, in our own words, with the numbers of the layer on screen filled
// in (receptive field and jump from the model's own JSON). Pure: no DOM, so tests can check the numbers.

import { formatInt } from './format.js';

const n = (v) => (Number.isInteger(v) ? String(v) : String(Math.round(v * 100) / 100)).replace('-', '−');
const pair = (a) => (Array.isArray(a) ? a : [a, a]);

/** Short texts per concept id (used by the "?" buttons and the "what am I looking at" panels). */
export const CONCEPTS = {
  'receptive-field': {
    title: 'Receptive field',
    text: 'The patch of the input picture that one output value of a layer can see. Every 3×3 or 5×5 window '
      + 'on top of an earlier window sees a little more, so the patch grows layer by layer.',
  },
  jump: {
    title: 'Jump',
    text: 'How many input pixels apart two neighbouring output values of a layer sit. Every stride multiplies it: '
      + 'after a stride-2 pooling, one step in the output is 2× as many input pixels as before.',
  },
  scale: {
    title: 'Scale (Layer · Channel · Model)',
    text: 'Which values share one colour scale. Layer: all channels of this layer, so channels can be compared '
      + '(a pale tile really is weak). Channel: each tile stretched to its own minimum and maximum, so weak '
      + 'channels show their pattern but cannot be compared. Model: one scale for every layer of the model.',
  },
  'tile-number': {
    title: 'The number under each tile',
    text: '#k is the channel index. The number beside it is the channel\'s mean activation over all positions '
      + '(with "Sort: Max", its maximum): the value the tiles are sorted by.',
  },
  'top-channels': {
    title: 'Top channels',
    text: 'A convolution adds up one product grid per input channel. With many input channels, the step-through '
      + 'shows the N channels whose sums are largest in size one by one, and adds the rest in one line, so the '
      + 'total still equals PyTorch\'s output.',
  },
  'each-input-channel': {
    title: 'Each input channel',
    text: 'On: one step per input channel (window × kernel = products, then the sum so far). Off: one step per '
      + 'output cell with all channels added at once.',
  },
  parameters: { title: 'Parameters: convolution vs dense', text: 'A convolution\'s parameters are its kernels and biases, shared by every position.' },
  'one-by-one': {
    title: '1×1 convolution',
    text: 'A 1×1 kernel reads no neighbours: at each position it multiplies the input channels\' values by one weight each '
      + 'and adds them (plus a bias). Each output channel is a different mix. Networks use it to change the number of '
      + 'channels cheaply: C_in × C_out weights, whatever the image size.',
  },
  stride: { title: 'Stride', text: 'How far the window moves between two output cells. Stride 2 halves the output size.' },
  padding: { title: 'Padding', text: 'Zeros added around the input (hatched cells) so the window can also sit on the border.' },
  dilation: { title: 'Dilation', text: 'Gaps between the kernel\'s taps: a 3×3 kernel with dilation 2 covers 5×5 input cells with 9 taps.' },
  groups: { title: 'Groups', text: 'Groups split the channels: with groups = channels (depthwise), each output channel reads one input channel only.' },
  'output-size': {
    title: 'Output size',
    text: '⌊(input + padding before + padding after − dilation·(kernel − 1) − 1) / stride⌋ + 1, per axis.',
  },
  gradcam: {
    title: 'Grad-CAM',
    text: 'For one class c and one layer: the gradient of the class score y^c with respect to each channel A^k, '
      + 'averaged over positions, gives one weight α_k per channel. The map is ReLU(Σ_k α_k A^k): channels that '
      + 'raise the score count positively, and the ReLU keeps only evidence for the class.',
  },
  'map-over-image': {
    title: 'Map over the image',
    text: 'Each value of a feature map is drawn at the centre of its receptive field on the picture, not stretched '
      + 'over it: a layer without padding has fewer values than pixels, and its border values sit inside the picture.',
  },
  pooling: {
    title: 'Pooling',
    text: 'One value per window: the largest (max), the mean (average) or √Σx² (L2). Small shifts of the input often '
      + 'leave the pooled values unchanged, because the winner stays in its window.',
  },
  softmax: { title: 'Softmax', text: 'Turns the class scores (logits) into probabilities: e^{z_i} / Σ_j e^{z_j}. Larger scores win more than in proportion.' },
};

/** The view-level explanation: what the page shows and how to read it. */
export const VIEWS = {
  overview: 'What the model says about your picture, and what it is made of. Predictions: the classes it finds most '
    + 'likely, with their softmax probabilities (they add up to 100 % over all classes). Architecture: every layer in '
    + 'order with its output shape (channels × height × width), its parameters and its receptive field.',
  live: 'The camera (or the drawing pad) through the network, frame after frame: the predictions, one layer\'s '
    + 'feature maps and, when a method is chosen, where the network looks. Each frame goes to the server over a '
    + 'WebSocket; frames/s and latency say how fast it keeps up. Nothing is stored unless you press Capture.',
  network: 'Every layer of the model at once, for your picture: the input at the left, one column per layer with '
    + 'its strongest channels (each a map of what one filter found), the class probabilities at the right. Point at '
    + 'a cell of a map to see which cells of the previous layer it is computed from; click it to open the '
    + 'computation itself.',
  layers: 'Each tile is one channel of the chosen layer: what one learned filter found in your image, as a map '
    + '(blue negative, white zero, red positive, or dark-to-light when all values have one sign). Click a tile to '
    + 'see it large and over the picture; the strip above is the network in order.',
  saliency: 'Which parts of the picture made the network choose a class. Warm colours: the pixels that, by the chosen '
    + 'method, raised that class\'s score most. Each of the top 5 classes has its own map; open one to read values.',
  'step-through': 'One layer of the real model on your image, one output cell at a time: the window on the input, the '
    + 'kernel, their products and the sums adding up to the number PyTorch computed. Space plays, arrows step.',
  train: 'A network learning: every step shows it a batch of training images, measures how wrong it is (the loss) '
    + 'and nudges every weight downhill, by the learning rate. The held-out curve is measured on images it never '
    + 'trains on; the first-layer filters above change as it learns.',
  experiments: 'What if? Switch channels of a layer off, cover part of the picture, add a perturbation the eye '
    + 'cannot see, or put a second network beside this one — and read what changes, in the network\'s own numbers.',
  sandbox: 'A small grid you type yourself, convolved or pooled step by step with any kernel, padding, stride and '
    + 'dilation; below, the same kernel on the whole picture and what shifting the input does.',
};

/**
 * The layer feeding `layer` for the receptive-field recursion: the nearest earlier leaf whose field and
 * jump give this layer's by r = r_in + (k − 1)·d·j_in and j = j_in·s (null for the first layer: the input,
 * r = 1, j = 1). Returns {source, field} or undefined when the model branches in a way the formula cannot follow.
 */
function feedingField(model, layer, k, d, s) {
  const r = pair(layer.receptive_field.size);
  const j = pair(layer.receptive_field.jump);
  const fits = (rin, jin) => [0, 1].every((a) => rin[a] + (k[a] - 1) * d[a] * jin[a] === r[a] && jin[a] * s[a] === j[a]);
  const at = model.layers.indexOf(layer);
  for (let i = at - 1; i >= 0; i -= 1) {
    const prev = model.layers[i];
    if (!prev.leaf || !prev.receptive_field || prev.receptive_field.whole_image) continue;
    if (fits(pair(prev.receptive_field.size), pair(prev.receptive_field.jump))) return { source: prev.name, field: prev.receptive_field };
    if (['conv', 'pool'].includes(prev.kind)) break; // the nearest windowed layer does not fit: a branch
  }
  if (fits([1, 1], [1, 1])) return { source: 'the input', field: { size: [1, 1], jump: [1, 1] } };
  return undefined;
}

/**
 * The receptive field and jump of `layer`, derived from the layer that feeds it, with the numbers.
 * Returns {size, jump, lines: [..], source} or null when the layer has no receptive field.
 */
export function receptiveFieldFacts(model, layer) {
  const field = layer && layer.receptive_field;
  if (!field) return null;
  const size = pair(field.size);
  const jump = pair(field.jump);
  if (field.whole_image) {
    return { size, jump, source: null, lines: [`Every output value of ${layer.name} sees the whole ${model.input.height}×${model.input.width} input.`] };
  }
  const windowed = ['conv', 'pool'].includes(layer.kind) && layer.kernel_size;
  const k = windowed ? pair(layer.kernel_size) : [1, 1];
  const d = windowed && layer.dilation ? pair(layer.dilation) : [1, 1];
  const s = windowed ? pair(layer.stride || layer.kernel_size) : [1, 1];
  const from = feedingField(model, layer, k, d, s);
  const lines = [`One output value of ${layer.name} sees ${n(size[0])}×${n(size[1])} input pixels; neighbouring values are ${n(jump[0])} pixel${jump[0] === 1 ? '' : 's'} apart (jump ${n(jump[0])}).`];
  if (from) {
    const rin = pair(from.field.size);
    const jin = pair(from.field.jump);
    if (windowed) {
      lines.push(`r = r_in + (k − 1)·d·j_in = ${n(rin[0])} + (${k[0]} − 1)·${d[0]}·${n(jin[0])} = ${n(size[0])}`
        + ` (r_in, j_in: ${from.source === 'the input' ? 'a single input pixel' : `of ${from.source}`})`);
      lines.push(`jump = j_in·stride = ${n(jin[0])}·${s[0]} = ${n(jump[0])}`);
    } else {
      lines.push(`${layer.type} works on one value at a time, so it keeps the receptive field (${n(size[0])}) and the jump (${n(jump[0])}) of ${from.source}.`);
    }
  }
  return { size, jump, source: from ? from.source : null, lines };
}

/** The output shape [C, H, W] of what feeds `layer` (model input for the first layer), or null. */
function inputShape(model, layer) {
  const facts = receptiveFieldFacts(model, layer);
  if (facts && facts.source === 'the input') return [model.input.channels, model.input.height, model.input.width];
  const source = facts && facts.source && model.layers.find((l) => l.name === facts.source);
  return source && Array.isArray(source.output_shape) && source.output_shape.length === 3 ? source.output_shape : null;
}

/**
 * Parameter sharing in numbers: this conv layer's parameters against a dense (fully connected) layer
 * between the same input and output sizes. Returns {conv, dense, ratio, text} or null (not a conv layer).
 */
export function parameterFacts(model, layer) {
  if (!layer || layer.kind !== 'conv' || !layer.kernel_size || !Array.isArray(layer.output_shape)) return null;
  const [kh, kw] = pair(layer.kernel_size);
  const perKernel = (layer.in_channels / (layer.groups || 1)) * kh * kw;
  const bias = layer.bias ? layer.out_channels : 0;
  const conv = layer.out_channels * perKernel + bias;
  const shape = inputShape(model, layer);
  const outN = layer.output_shape.reduce((a, b) => a * b, 1);
  let text = `This convolution: ${layer.out_channels} kernels × ${layer.in_channels / (layer.groups || 1)}×${kh}×${kw} weights`
    + `${bias ? ` + ${bias} biases` : ''} = ${formatInt(conv)} parameters (the model reports ${formatInt(layer.params)}).`;
  if (!shape || shape[0] !== layer.in_channels) return { conv, dense: null, ratio: null, text };
  const inN = shape.reduce((a, b) => a * b, 1);
  const dense = inN * outN + outN;
  const ratio = dense / conv;
  text += ` A dense layer from the same ${shape.join('×')} input (${formatInt(inN)} values) to the same ${layer.output_shape.join('×')} output`
    + ` (${formatInt(outN)} values) would need ${formatInt(inN)} × ${formatInt(outN)} + ${formatInt(outN)} = ${formatInt(dense)}: ${formatInt(Math.round(ratio))}× more,`
    + ' because a convolution reuses its small kernels at every position (parameter sharing) and reads only a window.';
  return { conv, dense, ratio, text };
}

/** The text for a "?" next to a control: the concept's sentence, plus the layer's numbers for RF/jump. */
export function conceptText(id, { model, layer } = {}) {
  const concept = CONCEPTS[id];
  if (!concept) return '';
  if (id === 'parameters' && model && layer) {
    const facts = parameterFacts(model, layer);
    if (facts) return facts.text;
  }
  if ((id === 'receptive-field' || id === 'jump') && model && layer) {
    const facts = receptiveFieldFacts(model, layer);
    if (facts) return `${concept.text} ${facts.lines.join(' ')}`;
  }
  return concept.text;
}
