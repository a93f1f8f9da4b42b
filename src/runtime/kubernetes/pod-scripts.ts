import type { HttpProbe } from '../../domain/probes.js';
import { mergeOwnedFields, OWNED_PATHS } from '../../workspace/openclaw-config.js';

/**
 * The two programs a customer's pod runs for the controller, as Node.js (the assistant's image
 * has it: OpenClaw is a Node program). Both take every value as a command-line argument, never
 * spliced into program or shell text: no shell runs, and a template's paths, fields and values
 * are data wherever they come from.
 *
 * - The probe: an exec probe, because a kubelet's httpGet probe checks only the status code, and
 *   the OpenClaw gateway answers 200 with its Control UI page on every path it does not know. It
 *   passes only on 200 with a JSON object holding every field the template's probe declares,
 *   the rule the Docker runtime's probes follow (docker/health.ts).
 * - The seed: the init container that prepares the workspace volume before the assistant starts.
 *   Markdown and other rendered files are linked to their copy in the Secret volume (the kubelet
 *   refreshes those in place, so a re-render reaches the running pod). openclaw.json is shared
 *   with OpenClaw, which renames its own edits over it (key migrations, the paired owner), so it
 *   cannot be a link: the seed merges the controller's fields (OWNED_PATHS, passed as an
 *   argument) into the file on the volume with `mergeOwnedFields`, shipped here as its own source
 *   so the pod merges exactly as FileWorkspaces does, and keeps everything else.
 */

/** Where the rendered files (the customer's Secret) are mounted, read-only. */
export const RENDERED_DIR = '/blytz/rendered';

/** How long one probe request may take inside the probe (the kubelet's timeout is a little longer). */
export const PROBE_REQUEST_MS = 4000;

const PROBE_PROGRAM = `'use strict';
const [path, expected, port, client] = process.argv.slice(1);
const fail = (why) => {
  process.stderr.write('GET ' + path + ' ' + why + '\\n');
  process.exit(1);
};
fetch('http://127.0.0.1:' + port + path, {
  redirect: 'manual',
  headers: { accept: 'application/json', 'x-forwarded-for': client },
  signal: AbortSignal.timeout(${PROBE_REQUEST_MS}),
}).then(async (response) => {
  const text = await response.text();
  if (response.status !== 200) fail('answered ' + response.status);
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    fail('answered 200 but not with JSON');
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) fail('answered a JSON body that is not an object');
  for (const [field, value] of Object.entries(JSON.parse(expected))) {
    if (body[field] !== value) fail('answered ' + field + '=' + JSON.stringify(body[field]) + ' (expected ' + JSON.stringify(value) + ')');
  }
  process.exit(0);
}, (error) => fail('failed: ' + error.message));
`;

/** The exec probe's command: GET `probe.path` on the container port, its declared fields checked. */
export function probeCommand(probe: HttpProbe, port: number, client: string): string[] {
  return ['node', '-e', PROBE_PROGRAM, '--', probe.path, JSON.stringify(probe.expect), String(port), client];
}

/** What the seed does, as its one JSON argument. */
export interface SeedPlan {
  /** The workspace volume's mount path. */
  workspace: string;
  /** The Secret volume's mount path. */
  rendered: string;
  /** Rendered files linked from the workspace (`path`) to their Secret key. */
  links: Array<{ key: string; path: string }>;
  /** openclaw.json: the controller's fields (in the Secret under `key`) merged into `path`. */
  config?: { key: string; path: string } | undefined;
  /** The fields the controller owns (OWNED_PATHS). */
  ownedPaths: ReadonlyArray<readonly string[]>;
}

const SEED_PROGRAM = `'use strict';
const fs = process.getBuiltinModule('node:fs');
const { dirname, join } = process.getBuiltinModule('node:path');
const { isDeepStrictEqual } = process.getBuiltinModule('node:util');
const mergeOwnedFields = ${mergeOwnedFields.toString()};
const plan = JSON.parse(process.argv[1]);
const inside = (relative) => {
  if (relative === '' || relative.startsWith('/') || relative.split('/').some((part) => part === '' || part === '.' || part === '..'))
    throw new Error('not a relative path: ' + JSON.stringify(relative));
  return join(plan.workspace, relative);
};
for (const { key, path } of plan.links) {
  const target = inside(path);
  fs.mkdirSync(dirname(target), { recursive: true });
  fs.rmSync(target, { recursive: true, force: true });
  fs.symlinkSync(join(plan.rendered, key), target);
}
if (plan.config) {
  const target = inside(plan.config.path);
  const owned = JSON.parse(fs.readFileSync(join(plan.rendered, plan.config.key), 'utf8'));
  let current = {};
  let stat;
  try {
    stat = fs.lstatSync(target);
  } catch (error) {
    if (error.code !== 'ENOENT') throw error;
  }
  if (stat && stat.isFile() && stat.size <= 1048576) {
    const text = fs.readFileSync(target, 'utf8');
    let parsed;
    try {
      parsed = JSON.parse(text);
    } catch {}
    if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) current = parsed;
    else fs.writeFileSync(target + '.unreadable', text, { mode: 0o600 });
  } else if (stat) {
    // A link (an older seed linked this file), a folder, a huge file: not OpenClaw's config.
    fs.rmSync(target, { recursive: true, force: true });
  }
  const merged = mergeOwnedFields(current, owned, plan.ownedPaths);
  if (!stat || !stat.isFile() || !isDeepStrictEqual(merged, current)) {
    fs.mkdirSync(dirname(target), { recursive: true });
    const temporary = target + '.blytz-seed';
    fs.writeFileSync(temporary, JSON.stringify(merged, null, 2) + '\\n', { mode: 0o600 });
    fs.renameSync(temporary, target);
  }
  fs.chmodSync(target, 0o600);
}
`;

/** The seed's command: `node -e <program> -- <plan as JSON>`. */
export function seedCommand(plan: Omit<SeedPlan, 'ownedPaths'>): string[] {
  const full: SeedPlan = { ...plan, ownedPaths: OWNED_PATHS };
  return ['node', '-e', SEED_PROGRAM, '--', JSON.stringify(full)];
}
