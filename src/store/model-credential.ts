import { createHash, randomBytes } from 'node:crypto';

/**
 * A customer's model credential: the API key its assistant sends to the model gateway. 32 random
 * bytes behind a recognisable prefix (so log masking and secret scanners can spot one). It is
 * looked up by its SHA-256 only: a random 256-bit secret needs no slow hash, and the digest
 * alone opens nothing. It is worth nothing outside the gateway (no provider accepts it) and the
 * gateway takes it only for its own customer, while that customer is active, from that customer's
 * container.
 */

export const CREDENTIAL_PREFIX = 'blytz-mk-';
const CREDENTIAL = /^blytz-mk-[A-Za-z0-9_-]{43}$/;

export function newCredential(): string {
  return `${CREDENTIAL_PREFIX}${randomBytes(32).toString('base64url')}`;
}

/** Hex SHA-256, the form stored and looked up. */
export function credentialHash(credential: string): string {
  return createHash('sha256').update(credential, 'utf8').digest('hex');
}

/** Whether a string has a credential's shape (anything else is refused without a lookup). */
export function isCredentialShaped(value: string): boolean {
  return CREDENTIAL.test(value);
}
