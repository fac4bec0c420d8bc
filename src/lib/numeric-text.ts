/**
 * Text that is a plain decimal number ("12", "-0.5", ".5", "1e3"); not "0x10", "Infinity" or "1,5".
 * No two parts can match the same digits (the digits after the point only follow a point), so a
 * long string that fails ("111…1x", a category a client sends) is rejected in linear time instead
 * of backtracking over every split of its digits.
 */
export const NUMERIC_TEXT = /^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$/;
