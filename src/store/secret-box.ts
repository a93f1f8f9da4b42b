import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

/**
 * AES-256-GCM for customer secrets at rest. A sealed value is `v1:<iv>:<tag>:<ciphertext>` in
 * base64url, so a reader of the raw table sees no token. The customer name is bound in as
 * associated data: a ciphertext copied onto another customer's row does not decrypt.
 */
const TAG_BYTES = 16;

export class SecretBox {
  readonly #key: Buffer;
  /** Keys rotated out (BLYTZ_SECRET_KEY_PREVIOUS): they still open, never seal. */
  readonly #previous: Buffer[];

  constructor(key: Buffer, previous: Buffer[] = []) {
    for (const k of [key, ...previous]) if (k.length !== 32) throw new Error('secret key must be 32 bytes');
    this.#key = Buffer.from(key);
    this.#previous = previous.map((k) => Buffer.from(k));
  }

  seal(plaintext: string, context: string): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.#key, iv);
    cipher.setAAD(Buffer.from(context, 'utf8'));
    const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return ['v1', iv.toString('base64url'), cipher.getAuthTag().toString('base64url'), body.toString('base64url')].join(':');
  }

  open(sealed: string, context: string): string {
    return this.#openWithAny(sealed, context).plaintext;
  }

  /** Whether the value was sealed under a previous key (and should be sealed again). */
  sealedWithPreviousKey(sealed: string, context: string): boolean {
    return this.#openWithAny(sealed, context).previous;
  }

  #openWithAny(sealed: string, context: string): { plaintext: string; previous: boolean } {
    try {
      return { plaintext: this.#openWith(this.#key, sealed, context), previous: false };
    } catch (error) {
      for (const key of this.#previous) {
        try {
          return { plaintext: this.#openWith(key, sealed, context), previous: true };
        } catch {
          // try the next one
        }
      }
      throw error;
    }
  }

  #openWith(key: Buffer, sealed: string, context: string): string {
    const [version, iv, tag, body] = sealed.split(':');
    if (version !== 'v1' || iv === undefined || tag === undefined || body === undefined) {
      throw new Error('sealed secret has an unknown format');
    }
    const authTag = Buffer.from(tag, 'base64url');
    // GCM accepts tags as short as 4 bytes, and a truncated tag is a prefix of the right one:
    // insist on the full 16 bytes, or a forger needs to guess only 32 bits.
    if (authTag.length !== TAG_BYTES) throw new Error('sealed secret has an unknown format');
    const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(iv, 'base64url'), { authTagLength: TAG_BYTES });
    decipher.setAAD(Buffer.from(context, 'utf8'));
    decipher.setAuthTag(authTag);
    return Buffer.concat([decipher.update(Buffer.from(body, 'base64url')), decipher.final()]).toString('utf8');
  }

  // Never let the key reach a log through an accidental `logger.info({ box })`.
  toJSON(): string {
    return '[SecretBox]';
  }
}
