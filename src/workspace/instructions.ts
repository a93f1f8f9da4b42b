/**
 * What the templates need from a customer's free-text instructions: a one-line description of
 * the user and a list of responsibilities. Pure string handling, no I/O.
 */

export interface ParsedInstructions {
  /** The instructions, line endings normalised, trailing blanks trimmed ('' when empty). */
  text: string;
  /** The first non-empty line when it is prose (not a list item), else undefined. */
  description: string | undefined;
  /** The text of each `-` or `*` list line, in order. */
  responsibilities: string[];
}

// `- item` or `* item`; `**bold**` is not a list item because a space must follow the marker.
const LIST_ITEM = /^\s*[-*]\s+(.*\S)\s*$/;

export function parseInstructions(instructions: string): ParsedInstructions {
  const text = instructions
    .replace(/\r\n?/g, '\n')
    .split('\n')
    .map((line) => line.trimEnd())
    .join('\n')
    .trim();
  const lines = text === '' ? [] : text.split('\n');
  const first = lines.find((line) => line.trim() !== '');
  const description = first !== undefined && !LIST_ITEM.test(first) ? first.trim() : undefined;
  const responsibilities = lines.flatMap((line) => {
    const item = LIST_ITEM.exec(line)?.[1];
    return item === undefined ? [] : [item];
  });
  return { text, description, responsibilities };
}
