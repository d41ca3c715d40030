/**
 * The views of the main area, one tab each, in tab order.
 *
 * Contract for a view module (loaded lazily with `load()`), which exports:
 *   mount(container, ctx)  build the view inside `container` (an empty element owned by the host) and
 *                          start its work (fetches, animations).
 *   update(ctx)            ctx changed (model, weights, image, or any URL key); compare with the ctx you
 *                          kept and redo only what changed. Never called before mount or after unmount.
 *   unmount()              stop everything: abort fetches, clear every timer / animation frame, remove
 *                          every listener the view added (above all on window/document). The host
 *                          empties `container` afterwards.
 *
 * ctx = {
 *   model,    the GET /api/models/{id}?weights= JSON: id, title, dataset, input {channels,height,width},
 *             num_classes, weights {state, detail}, weights_used, default_layer, layers [...], total_params
 *   imageId,  sha256 id of the current image, or null when there is none yet
 *   weights,  'trained' | 'untrained': the variant the page shows; pass it as ?weights= on model-scoped calls
 *   state,    URL state (js/state.js): read(), get(key), set({key: value}, {replace}), subscribe(fn).
 *             View-specific keys (layer, channel, …) live there too, so links reproduce the view.
 *   api,      js/api.js: api.predictions(...), api.getJson(url, {signal}), api.urls.modelPath(...), …
 * }
 *
 * A spec may list `aliases`: older ids that still open it (shared links, classroom state), e.g. `stepper`.
 * A spec may add `available(model) -> boolean` when the view only makes sense for some models; the
 * tab is then shown disabled with `unavailableReason`.
 */
// Names: the code says "feature maps" (folder feature-maps/, server package feature_maps); the tab and its
// page key keep the user's word "Layers" / `layers`. The step-through is `step-through` everywhere.
export const VIEWS = [
  { id: 'network', title: 'Network', load: () => import('../network/network-view.js') },
  { id: 'overview', title: 'Overview', load: () => import('../overview/overview-view.js') },
  { id: 'layers', title: 'Layers', load: () => import('../feature-maps/feature-maps-view.js') },
  { id: 'saliency', title: 'Saliency', load: () => import('../saliency/saliency-view.js') },
  { id: 'step-through', title: 'Step-through', aliases: ['stepper'], load: () => import('../step-through/step-through-view.js') },
  { id: 'sandbox', title: 'Sandbox', load: () => import('../sandbox/sandbox-view.js') },
  { id: 'experiments', title: 'Experiments', load: () => import('../experiments/experiments-view.js') },
  { id: 'live', title: 'Live', load: () => import('../live/live-view.js') },
  { id: 'train', title: 'Train', load: () => import('../train/train-view.js') },
];

export const DEFAULT_VIEW = VIEWS[0].id;

/** The spec for `id` (or one of its aliases), or undefined. */
export function findView(id) {
  return VIEWS.find((view) => view.id === id) || VIEWS.find((view) => (view.aliases || []).includes(id));
}

/** The current id for `id`: an alias becomes its view's id; anything else is returned as it is. */
export function canonicalViewId(id) {
  const spec = findView(id);
  return spec ? spec.id : id;
}
