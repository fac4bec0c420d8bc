import { NUMERIC_TEXT } from '../lib/numeric-text.js';

/** Digits in a number's text beyond which a double may not hold it exactly (so its shortest string would change the digits). */
const EXACT_DIGITS = 15;

/**
 * The category a value names: one rule for training cells, uploaded cells and request values, so
 * a category the model learned is found again however it arrives.
 * - Text is trimmed (CSV cells always were).
 * - Text that is a plain decimal number is that number's decimal string, the string a JSON number
 *   gives (`String(n)`): "2", "2.0", "+2" and 2 are one category, as are "1.50" and 1.5, "-0" and 0.
 * - Except text with a leading zero ("02", "007", "-01"): such codes are identifiers, not numbers,
 *   and stay as written; so does a number with more than 15 digits, which a double cannot hold.
 */
export function categoryOf(v: string | number): string {
  if (typeof v === 'number') return String(v);
  const s = v.trim();
  if (!NUMERIC_TEXT.test(s) || hasLeadingZero(s) || digitCount(s) > EXACT_DIGITS) return s;
  const n = Number(s);
  // "1e400" is no number a request can send (JSON numbers are finite doubles): it stays text.
  return Number.isFinite(n) ? String(n) : s;
}

function hasLeadingZero(s: string): boolean {
  const i = s[0] === '-' || s[0] === '+' ? 1 : 0;
  return s[i] === '0' && s.length > i + 1 && s[i + 1] >= '0' && s[i + 1] <= '9';
}

/** Digits of the mantissa (before any exponent). */
function digitCount(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x65 || c === 0x45) break; // e, E
    if (c >= 0x30 && c <= 0x39) n++;
  }
  return n;
}

/**
 * The flag a word names: "true" or "false" in any letter case, trimmed (as training infers boolean
 * columns); undefined for anything else ("yes", "1" and "" are not flags).
 */
export function booleanWord(s: string): boolean | undefined {
  const t = s.trim();
  if (t.length === 4 && (t === 'true' || t === 'TRUE' || t.toLowerCase() === 'true')) return true;
  if (t.length === 5 && (t === 'false' || t === 'FALSE' || t.toLowerCase() === 'false')) return false;
  return undefined;
}
