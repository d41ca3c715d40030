// Pure helpers for following: which URL keys belong to the class (everything in the page's query but
// the keys private to one browser), and the changes that make a page show the teacher's view.

/** Keys that never travel between teacher and students. */
export const PRIVATE_KEYS = new Set(['session']);

/** The part of a page state the class shares. */
export function sharedState(state) {
  const out = {};
  for (const [key, value] of Object.entries(state)) {
    if (!PRIVATE_KEYS.has(key) && value !== undefined && value !== null && value !== '') out[key] = String(value);
  }
  return out;
}

/** Views that each browser runs for itself: the Live view turns on the viewer's own camera and holds a live
 *  socket, so a class must not open it on a hundred laptops at once. Students keep their own view there and
 *  follow everything else (model, image, layer). */
export const UNSHARED_VIEWS = new Set(['live']);

/** The `state.set()` changes that turn `current` into `teacher` (null removes a key). */
export function changesToFollow(current, teacher) {
  const mine = sharedState(current);
  const target = sharedState(teacher);
  if (UNSHARED_VIEWS.has(target.view)) {
    delete target.view;
    if (mine.view !== undefined) target.view = UNSHARED_VIEWS.has(mine.view) ? 'overview' : mine.view;
  }
  const changes = {};
  for (const [key, value] of Object.entries(target)) if (mine[key] !== value) changes[key] = value;
  for (const key of Object.keys(mine)) if (!(key in target)) changes[key] = null;
  return changes;
}

/** True when the page shows the teacher's view. */
export function showsSameView(current, teacher) {
  return Object.keys(changesToFollow(current, teacher)).length === 0;
}

/** Keys whose change by the student means "I am exploring now" (a new image, model or tab). */
export const EXPLORING_KEYS = ['image', 'model', 'view'];

/** A short description of where the teacher is, e.g. "Layers · conv2". */
export function describeView(state, viewTitles) {
  const parts = [viewTitles.get(state.view) || state.view || 'Overview'];
  if (UNSHARED_VIEWS.has(state.view)) parts[0] += ' (on the teacher\'s screen)';
  if (state.layer) parts.push(state.layer);
  if (state.channel) parts.push(`channel ${state.channel}`);
  return parts.join(' · ');
}
