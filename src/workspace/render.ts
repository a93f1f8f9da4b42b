import { stableHash } from '../domain/canonical-json.js';
import { parseInstructions } from './instructions.js';
import { buildOpenClawConfig, serializeOpenClawConfig } from './openclaw-config.js';
import { fillPlaceholders } from './placeholders.js';
import type { ResolvedTemplate, TemplateSource } from './template-manifest.js';
import type { RenderedFile, RenderedWorkspace, WorkspaceInput } from './workspace.js';

/**
 * Rendering a customer's workspace: a pure function of the template and the input (no I/O, no
 * clock, no randomness), so the same input always gives the same bytes and the same hashes.
 */

/**
 * The OpenClaw config, relative to the customer folder; holds tokens, so it is secret (0600). The
 * gateway rewrites it too, so it is merged, never replaced (see openclaw-config.ts), and it is
 * not part of the spec hash: the gateway reloads it in place.
 */
export const OPENCLAW_CONFIG_FILE = 'openclaw.json';
/** Folder (inside the customer folder) that is the agent's workspace and holds the Markdown files. */
export const WORKSPACE_SUBDIR = 'workspace';

/** Bumped when the on-disk layout changes, so every workspace counts as stale and is rewritten. */
const RENDER_FORMAT = 2;

const FALLBACK_ASSISTANT_NAME = 'Assistant';
const FALLBACK_DESCRIPTION = 'They have not told you about themselves yet: ask what they do and how you can help.';
const FALLBACK_RESPONSIBILITIES = [
  'Answer their questions and help with everyday tasks.',
  'Learn what they need help with, and keep notes in `memory/` so you remember it.',
];
const FALLBACK_INSTRUCTIONS = '_No instructions yet._';

export function renderWorkspace(
  template: ResolvedTemplate,
  sources: readonly TemplateSource[],
  input: WorkspaceInput,
): RenderedWorkspace {
  const parsed = parseInstructions(input.instructions);
  const responsibilities = parsed.responsibilities.length > 0 ? parsed.responsibilities : FALLBACK_RESPONSIBILITIES;
  const values = {
    assistantName: oneLine(input.displayName) || FALLBACK_ASSISTANT_NAME,
    userDescription: parsed.description ?? FALLBACK_DESCRIPTION,
    responsibilities: responsibilities.map((item) => `- ${item}`).join('\n'),
    instructions: parsed.text || FALLBACK_INSTRUCTIONS,
  };

  const files: RenderedFile[] = sources.map((source) => ({
    path: `${WORKSPACE_SUBDIR}/${source.path}`,
    content: fillPlaceholders(source.content, values, `template "${template.name}" file ${source.path}`),
    secret: false,
  }));

  const config = buildOpenClawConfig({
    port: template.containerPort,
    gatewayToken: input.secrets.gatewayToken,
    workspacePath: `${template.mountPath}/${WORKSPACE_SUBDIR}`,
    publicOrigins: input.publicOrigins,
    trustedProxies: input.trustedProxies,
    telegramBotToken: input.secrets.telegramBotToken,
    telegramApiRoot: input.telegramApiRoot,
    modelProvider: input.modelProvider,
    modelApiKey: input.secrets.modelApiKey,
  });
  files.push({ path: OPENCLAW_CONFIG_FILE, content: serializeOpenClawConfig(config), secret: true, merge: 'openclaw-config' });
  files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));

  return {
    template,
    files,
    // The owner is part of it: a template moving to another uid must re-own the files.
    contentHash: stableHash({ format: RENDER_FORMAT, owner: template.user, files }),
  };
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}
