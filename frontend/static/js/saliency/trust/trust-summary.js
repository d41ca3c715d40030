// The panel's words: the one-paragraph explanation filled with this image's numbers, and the ranking of
// the methods by deletion AUC (lower is better) and insertion AUC (higher is better). Pure functions.

const f2 = (v) => Number(v).toFixed(2);

/** Rows sorted by deletion AUC, each with its rank by deletion and by insertion. */
export function rankMethods(deletions) {
  const rows = Object.entries(deletions).map(([name, d]) => ({ name, title: d.method.title,
    deletion: d.deletion_auc, insertion: d.insertion_auc }));
  const byInsertion = [...rows].sort((a, b) => b.insertion - a.insertion).map((r) => r.name);
  rows.sort((a, b) => a.deletion - b.deletion);
  return rows.map((r, i) => ({ ...r, deletionRank: i + 1, insertionRank: byInsertion.indexOf(r.name) + 1 }));
}

/** The average random-order AUCs over the answers (each answer's random order is the same seed). */
export function randomAucs(deletions) {
  const answers = Object.values(deletions);
  if (!answers.length) return null;
  const mean = (key) => answers.reduce((s, a) => s + a.random[key], 0) / answers.length;
  return { deletion: mean('deletion_auc'), insertion: mean('insertion_auc') };
}

/** One paragraph about this image: which maps survive randomisation, which order matters most. */
export function explain(sanity, deletions, { label }) {
  const parts = [];
  if (sanity) {
    const titles = Object.fromEntries(sanity.methods.map((m) => [m.name, m.title]));
    const checks = Object.entries(sanity.checks);
    const half = checks.length ? checks[0][1].half_step : 0;
    const failing = checks.filter(([, c]) => !c.passes);
    const passing = checks.filter(([, c]) => c.passes);
    const list = (items) => items.map(([name, c]) => `${titles[name]} (${f2(c.spearman_at_half)})`).join(', ');
    parts.push(`We re-initialised the model's weights from the output back, ${sanity.steps.length} steps, and recomputed each map for “${sanity.target.label}”. `
      + `After the top ${half} steps the model knows nothing of its classes, so a map that still looks the same cannot be showing what it learned.`);
    if (passing.length) parts.push(`Rank correlation with the original map at that point: ${list(passing)} — these maps changed, so they depend on the trained weights.`);
    if (failing.length) parts.push(`${list(failing)} stayed above 0.5: ${failing.length > 1 ? 'these maps show' : 'this map shows'} mostly the image itself (its edges), whatever the weights.`);
  }
  const rows = rankMethods(deletions);
  const random = randomAucs(deletions);
  if (rows.length && random) {
    const best = rows[0];
    const bestInsert = [...rows].sort((a, b) => a.insertionRank - b.insertionRank)[0];
    parts.push(`Deleting the pixels each map ranks highest first, the probability of “${label}” fell fastest with ${best.title} `
      + `(deletion AUC ${f2(best.deletion)}; a random order gives ${f2(random.deletion)}), and putting them back first raised it fastest with `
      + `${bestInsert.title} (insertion AUC ${f2(bestInsert.insertion)}; random ${f2(random.insertion)}).`);
  }
  parts.push('One image is one sample: try a few before trusting a method in general.');
  return parts.join(' ');
}
