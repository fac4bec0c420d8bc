import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { NUMERIC_TEXT } from '../src/lib/numeric-text.js';
import { categoryOf } from '../src/preprocessing/category.js';

describe('NUMERIC_TEXT', () => {
  it('accepts plain decimal numbers only', () => {
    for (const yes of ['12', '-0.5', '+3', '.5', '5.', '1e3', '1.5E-7', '007']) expect(NUMERIC_TEXT.test(yes), yes).toBe(true);
    for (const no of ['', '.', '-', '1e', '0x10', 'Infinity', 'NaN', '1,5', ' 12', '12 ', '1.2.3', '1e3.5', 'e3', '--1']) expect(NUMERIC_TEXT.test(no), no).toBe(false);
  });

  it('agrees with the number grammar it stands for on any short text of digits, signs, points and exponents', () => {
    // The reference: an optional sign, then digits with an optional fraction or a fraction alone, then an optional exponent.
    const reference = (s: string) => {
      const m = /^[-+]?([0-9]*)(?:\.([0-9]*))?(?:[eE][-+]?[0-9]+)?$/.exec(s);
      return m !== null && (m[1].length > 0 || (m[2] ?? '').length > 0);
    };
    const text = fc.array(fc.constantFrom('0', '1', '9', '.', '-', '+', 'e', 'E', 'x', ' '), { maxLength: 12 }).map((cs) => cs.join(''));
    fc.assert(fc.property(text, (s) => NUMERIC_TEXT.test(s) === reference(s)), { numRuns: 5000 });
  });

  it('rejects a long run of digits that ends in a non-digit without backtracking over it (a category from a client)', () => {
    // Quadratic backtracking took about a minute at 200,000 digits (past the test timeout); linear matching takes a millisecond.
    const long = '1'.repeat(200_000) + 'x';
    expect(NUMERIC_TEXT.test(long)).toBe(false);
    expect(NUMERIC_TEXT.test('1'.repeat(200_000) + '.5e')).toBe(false);
    expect(categoryOf(long)).toBe(long);
  });
});
