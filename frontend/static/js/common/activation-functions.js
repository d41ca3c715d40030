// The activation functions the step-through meets, as plain JS (for plotting f with the current value
// marked). Names are PyTorch's module names; parameters come from the trace's formula text.

const sigmoid = (x) => 1 / (1 + Math.exp(-x));
// erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): enough for a plot and a 1e-5 check
function erf(x) {
  const s = Math.sign(x);
  const a = Math.abs(x);
  const t = 1 / (1 + 0.3275911 * a);
  const y = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-a * a);
  return s * y;
}

/** f for activation `type` (PyTorch module name), or null when we cannot plot it. */
export function activationFunction(type, formula = '') {
  const slope = Number((/else\s+([-\d.e]+)·x/.exec(formula) || [])[1]);
  const table = {
    ReLU: (x) => Math.max(0, x),
    ReLU6: (x) => Math.min(Math.max(0, x), 6),
    LeakyReLU: (x) => (x > 0 ? x : (Number.isFinite(slope) ? slope : 0.01) * x),
    Tanh: Math.tanh,
    Sigmoid: sigmoid,
    Softplus: (x) => (x > 20 ? x : Math.log1p(Math.exp(x))), // PyTorch's threshold 20
    SiLU: (x) => x * sigmoid(x),
    Hardswish: (x) => (x * Math.min(Math.max(x + 3, 0), 6)) / 6,
    Hardsigmoid: (x) => Math.min(Math.max(x + 3, 0), 6) / 6,
    GELU: (x) => 0.5 * x * (1 + erf(x / Math.SQRT2)),
    ELU: (x) => (x > 0 ? x : Math.exp(x) - 1),
    Identity: (x) => x,
    Abs: Math.abs, // torch.abs: the sandbox offers it as an activation
  };
  return table[type] || null;
}
