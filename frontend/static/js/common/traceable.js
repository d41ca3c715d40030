// Which layers the step-through can trace (GET …/layers/{layer}/trace): leaf convolution, pooling and
// activation layers (not softmax) with a C×H×W output. One rule for the Step-through view, the Network
// view's unit detail and the comparison's side-by-side step-through.

const KINDS = ['conv', 'pool', 'activation'];

/** @param {object} layer  a row of the model's `layers` */
export const isTraceable = (layer) => Boolean(layer) && layer.leaf && KINDS.includes(layer.kind) && layer.type !== 'Softmax'
  && Array.isArray(layer.output_shape) && layer.output_shape.length === 3;

/** The model's traceable layers, in order. */
export const traceableLayers = (model) => model.layers.filter(isTraceable);
