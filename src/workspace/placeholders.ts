/**
 * The whole template language: `{{name}}` is replaced by the value called `name`. Values are
 * inserted literally in one pass, so a value that itself contains `{{x}}` (a customer can write
 * anything in their instructions) is never expanded again, and nothing is ever evaluated.
 */

const PLACEHOLDER = /\{\{\s*([A-Za-z][A-Za-z0-9_]*)\s*\}\}/g;

export class TemplateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TemplateError';
  }
}

/**
 * Fills `text`'s placeholders from `values`. An unknown placeholder is an error (naming
 * `source`), not an empty string: a typo in a template must not ship a half-rendered file.
 */
export function fillPlaceholders(text: string, values: Readonly<Record<string, string>>, source: string): string {
  // A replacer function (not a replacement string) so `$&`, `$1` in values stay literal.
  return text.replace(PLACEHOLDER, (_match, key: string) => {
    if (!Object.hasOwn(values, key)) {
      throw new TemplateError(`${source}: unknown placeholder {{${key}}} (known: ${Object.keys(values).sort().join(', ')})`);
    }
    return values[key] as string;
  });
}
