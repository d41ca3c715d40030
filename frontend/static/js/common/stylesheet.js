// A view's own stylesheet, added to <head> when the view first mounts (views load lazily, so their CSS does too).

import { el } from '../dom.js';

/**
 * Add `<link rel="stylesheet">` for `href` once; later calls return the same element. The page's version
 * (`<body data-version>`) is appended as `?v=` like the page's own stylesheets, so a new release is fetched.
 * @param {string} href  e.g. '/static/js/saliency/saliency.css'
 * @returns {HTMLLinkElement}
 */
export function ensureStylesheet(href) {
  const found = [...document.head.querySelectorAll('link[data-stylesheet]')].find((link) => link.dataset.stylesheet === href);
  if (found) return found;
  const version = document.body.dataset.version;
  const link = el('link', { rel: 'stylesheet', href: version ? `${href}?v=${encodeURIComponent(version)}` : href, dataset: { stylesheet: href } });
  document.head.append(link);
  return link;
}
