/** Text that is a plain decimal number ("12", "-0.5", ".5", "1e3"); not "0x10", "Infinity" or "1,5". */
export const NUMERIC_TEXT = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;
