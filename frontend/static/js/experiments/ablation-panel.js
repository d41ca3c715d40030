// The Experiments view's "Switch channels off": the ablation editor with its own layer picker.
// URL keys: layer, channels, invert, mode, factor, k (see ablation-editor.js).

import { createAblationEditor } from './ablation-editor.js';

export function create(host, explain) {
  return createAblationEditor(host, { explain, layerPicker: true });
}
