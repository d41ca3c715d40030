// Small DOM helpers shared by the shell and the views (no framework: plain elements).

/**
 * Create an element. `props`: className, text, dataset {…}, attrs {…}, and any other key is set as
 * a property (e.g. type, disabled, title). Children may be nodes or strings.
 */
export function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === 'className') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key === 'attrs') for (const [name, v] of Object.entries(value)) node.setAttribute(name, v);
    else node[key] = value;
  }
  for (const child of [].concat(children)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Listen and get back the function that stops listening (so unmount can undo everything). */
export function listen(target, type, handler, options) {
  target.addEventListener(type, handler, options);
  return () => target.removeEventListener(type, handler, options);
}

/** Group of cleanups run together: `const bag = disposer(); bag.add(listen(...)); bag.run();` */
export function disposer() {
  const cleanups = [];
  return {
    add(fn) {
      cleanups.push(fn);
      return fn;
    },
    run() {
      while (cleanups.length) {
        try {
          cleanups.pop()();
        } catch (err) {
          console.warn('cleanup failed', err);
        }
      }
    },
  };
}

/** True when the ApiError / Error is an aborted fetch (a newer request superseded it). */
export const isAbort = (err) => err && err.name === 'AbortError';
