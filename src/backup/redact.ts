/**
 * `openclaw.json` as it goes into a backup or an export: the secrets the controller renders (the
 * gateway token, the bot token, model API keys) are removed, everything OpenClaw wrote itself
 * (the paired owner, migrated keys) is kept. On restore the controller renders its secrets into
 * the file again. Pure: text in, text out.
 *
 * Besides the fields the controller owns, any value under a key that names a credential (token,
 * secret, password, apiKey, ...) is removed too: OpenClaw's config grows, and a new place a
 * secret lands must not leak into a customer's download.
 */

/** Where the controller renders secrets (see src/workspace/openclaw-config.ts). */
const OWNED_SECRET_PATHS: ReadonlyArray<readonly string[]> = [
  ['gateway', 'auth', 'token'],
  ['channels', 'telegram', 'botToken'],
];

/**
 * `env` held provider API keys (ANTHROPIC_API_KEY ...) in files older renders wrote: every entry
 * goes. Today's keys (`models.providers.<id>.apiKey`) are caught by the sweep below.
 */
const SECRET_BLOCKS: ReadonlyArray<readonly string[]> = [['env']];

const SECRET_KEY = /(token|secret|password|passwd|api[-_]?key|private[-_]?key|credential)s?$/i;

export interface RedactResult {
  text: string;
  /** Dotted paths removed, for the archive's manifest (never the values). */
  removed: string[];
}

/**
 * Removes secrets from an `openclaw.json`. Text that is not a JSON object cannot be checked, so
 * it is not kept at all (`text` empty, `removed` says why): a config the controller cannot read
 * is rendered afresh on restore anyway.
 */
export function redactOpenClawConfig(text: string): RedactResult {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return { text: '', removed: ['(unparseable file dropped)'] };
  }
  if (!isObject(parsed)) return { text: '', removed: ['(not a JSON object: dropped)'] };
  const removed: string[] = [];
  for (const path of OWNED_SECRET_PATHS) removeAt(parsed, path, removed);
  for (const path of SECRET_BLOCKS) {
    const block = getAt(parsed, path);
    if (isObject(block)) for (const key of Object.keys(block)) removeAt(parsed, [...path, key], removed);
  }
  if (!sweep(parsed, [], removed)) return { text: '', removed: ['(nested too deeply: dropped)'] };
  return { text: `${JSON.stringify(parsed, null, 2)}\n`, removed: [...new Set(removed)].sort() };
}

/**
 * Deeper than any OpenClaw config. The file is the container's: a deep chain over a wide array
 * made a walk copying its path per value, and the indented output, grow with depth times width,
 * which held the controller's main thread for minutes (every customer's requests with it).
 */
const MAX_DEPTH = 32;

/** Removes credential-named values; false (and stops) past MAX_DEPTH. `path` is one array, pushed and popped. */
function sweep(value: unknown, path: string[], removed: string[]): boolean {
  if (path.length > MAX_DEPTH) return false;
  if (Array.isArray(value)) {
    for (let index = 0; index < value.length; index++) {
      path.push(String(index));
      const ok = sweep(value[index], path, removed);
      path.pop();
      if (!ok) return false;
    }
    return true;
  }
  if (!isObject(value)) return true;
  for (const key of Object.keys(value)) {
    const child = value[key];
    if (SECRET_KEY.test(key) && (typeof child === 'string' || typeof child === 'number')) {
      delete value[key];
      removed.push([...path, key].join('.'));
      continue;
    }
    path.push(key);
    const ok = sweep(child, path, removed);
    path.pop();
    if (!ok) return false;
  }
  return true;
}

function getAt(root: Record<string, unknown>, path: readonly string[]): unknown {
  let current: unknown = root;
  for (const key of path) {
    if (!isObject(current)) return undefined;
    current = current[key];
  }
  return current;
}

function removeAt(root: Record<string, unknown>, path: readonly string[], removed: string[]): void {
  const parent = getAt(root, path.slice(0, -1));
  const key = path[path.length - 1] as string;
  if (isObject(parent) && Object.hasOwn(parent, key)) {
    delete parent[key];
    removed.push(path.join('.'));
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
