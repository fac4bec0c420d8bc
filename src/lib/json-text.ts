/**
 * JSON from a file's text. A UTF-8 byte-order mark is dropped first: editors on Windows and some
 * exporters write one, JSON.parse refuses it, and the importer (which already ignored it) must not
 * accept a file the loader then cannot read.
 */
export function parseJsonText<T = unknown>(text: string): T {
  return JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text) as T;
}
