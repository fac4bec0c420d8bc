/**
 * The first `max` UTF-16 units of `text`, one fewer where the cut would split a surrogate pair:
 * an answer that quotes a client's value must stay well-formed Unicode (strict JSON decoders
 * reject or replace a lone surrogate).
 */
export function cutText(text: string, max: number): string {
  if (text.length <= max) return text;
  const code = text.charCodeAt(max - 1);
  return text.slice(0, code >= 0xd800 && code <= 0xdbff ? max - 1 : max);
}
