/**
 * What CSV exports write for a missing number or flag: pandas' and R's defaults ("NA", "NaN",
 * "null", "None", "#N/A"…) and the "?" of many UCI datasets. In a column that is otherwise
 * numeric or boolean such a cell is blank (imputed; the feature becomes nullable). In a
 * categorical column it stays a category, which it may well be ("NA" for North America).
 * Infinities as pandas and R write them ("inf", "-Inf") count too: no request can send one (JSON
 * has no infinity), so as a number the model could never see it served, and one such cell must
 * not turn a numeric column categorical.
 */
const MISSING_MARKERS = new Set(['na', 'n/a', 'nan', 'null', 'none', '?', '-', '#n/a', 'inf', '-inf', '+inf', 'infinity', '-infinity', '+infinity']);

/** Whether a trimmed, non-blank cell is a missing-value marker. */
export function isMissingMarker(trimmed: string): boolean {
  return MISSING_MARKERS.has(trimmed.toLowerCase());
}
