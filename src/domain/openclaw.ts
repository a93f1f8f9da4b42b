/**
 * The OpenClaw release every customer runs. This is the one place the version is written:
 * `scripts/build-openclaw-image.sh` reads it from here, the default `BLYTZ_CUSTOMER_IMAGE` is
 * built from it, and the config tests validate against this version's own schema. A fleet
 * rollout must know what it rolls to, so the default is never `:latest`.
 */
export const OPENCLAW_VERSION = '2026.9.6';

/** The upstream image name: pulled from the registry in production, built locally here. */
export const OPENCLAW_IMAGE = `ghcr.io/openclaw/openclaw:${OPENCLAW_VERSION}`;
