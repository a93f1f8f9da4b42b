import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  customerFromHost,
  customerHost,
  disambiguatedName,
  isDns1123Label,
  MAX_NAME_LENGTH,
  nameFromEmail,
} from '../../src/domain/naming.js';

// Kubernetes' own definition, written out independently of src/domain/naming.ts.
function isValidLabel(name: string): boolean {
  return name.length >= 1 && name.length <= 63 && /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(name);
}

describe('nameFromEmail', () => {
  it.each([
    ['user@example.com', 'user-example-com'],
    ['User.Name@Example.COM', 'user-name-example-com'],
    ['test+tag@domain.co.uk', 'testtag-domain-co-uk'],
    ['../../etc/passwd@example.com', 'etc-passwd-example-com'],
  ])('%s -> %s', (email, expected) => {
    expect(nameFromEmail(email)).toBe(expected);
  });

  it('cuts a 69-character email to 63 characters without a trailing -', () => {
    // 62 letters, then "@", so the 63rd character of the derived name is the "-" from "@".
    const email = `${'a'.repeat(62)}@ex.com`;
    expect(email).toHaveLength(69);
    const name = nameFromEmail(email);
    expect(name).toBe('a'.repeat(62));
    expect(name.length).toBeLessThanOrEqual(63);
    expect(name.endsWith('-')).toBe(false);
    expect(isValidLabel(name)).toBe(true);
  });

  it('cuts a 69-character email that fits exactly at 63 characters', () => {
    const longer = `${'b'.repeat(59)}@abcde.com`; // 69
    expect(longer).toHaveLength(69);
    const name = nameFromEmail(longer);
    expect(name).toBe(`${'b'.repeat(59)}-abc`);
    expect(name).toHaveLength(63);
  });

  it('gives a valid name when nothing of the email survives', () => {
    const name = nameFromEmail('+++@...');
    expect(isValidLabel(name)).toBe(true);
    expect(name).toMatch(/^customer-[0-9a-f]{6}$/);
  });
});

describe('disambiguatedName', () => {
  it('gives two different emails with the same base different, stable, valid names', () => {
    const a = 'a.b@example.com';
    const b = 'a-b@example.com';
    expect(nameFromEmail(a)).toBe(nameFromEmail(b));
    const nameA = disambiguatedName(a);
    const nameB = disambiguatedName(b);
    expect(nameA).not.toBe(nameB);
    expect(nameA).not.toBe(nameFromEmail(a));
    expect(nameA.startsWith('a-b-example-com-')).toBe(true);
    expect(disambiguatedName(a)).toBe(nameA);
    expect(disambiguatedName(b)).toBe(nameB);
    expect(isValidLabel(nameA)).toBe(true);
    expect(isValidLabel(nameB)).toBe(true);
  });

  it('stays within 63 characters for a long email', () => {
    const email = `${'c'.repeat(70)}@example.com`;
    const name = disambiguatedName(email);
    expect(name.length).toBeLessThanOrEqual(MAX_NAME_LENGTH);
    expect(isValidLabel(name)).toBe(true);
    expect(name).not.toBe(disambiguatedName(`${'c'.repeat(71)}@example.com`));
  });
});

describe('isDns1123Label', () => {
  it.each(['a', 'a-b', '0abc', 'x'.repeat(63)])('accepts %s', (name) => expect(isDns1123Label(name)).toBe(true));
  it.each(['', '-a', 'a-', 'A', 'a.b', 'a/b', 'a_b', 'x'.repeat(64), "x'; DROP TABLE customers;--"])('rejects %j', (name) =>
    expect(isDns1123Label(name)).toBe(false),
  );
});

describe('name derivation properties', () => {
  // Plain strings, full unicode, and email-shaped strings with path and dot tricks.
  const anyEmail = fc.oneof(
    fc.string({ maxLength: 200 }),
    fc.string({ unit: 'grapheme', maxLength: 100 }),
    fc.emailAddress(),
    fc
      .tuple(
        fc.array(fc.constantFrom('.', '/', '..', '-', '@', '+', '_', 'A', 'z', '9', ' ', '\u0000', 'é', 'İ', '\u212a'), {
          maxLength: 90,
        }),
        fc.emailAddress(),
      )
      .map(([parts, email]) => parts.join('') + email),
  );

  it('nameFromEmail always gives a valid DNS-1123 label without . or /, deterministically', () => {
    fc.assert(
      fc.property(anyEmail, (email) => {
        const name = nameFromEmail(email);
        expect(isValidLabel(name)).toBe(true);
        expect(isDns1123Label(name)).toBe(true);
        expect(name).not.toMatch(/[./]/);
        expect(nameFromEmail(email)).toBe(name);
      }),
      { numRuns: 2000 },
    );
  });

  it('disambiguatedName always gives a valid DNS-1123 label without . or /, deterministically, unlike the base', () => {
    fc.assert(
      fc.property(anyEmail, (email) => {
        const name = disambiguatedName(email);
        expect(isValidLabel(name)).toBe(true);
        expect(name).not.toMatch(/[./]/);
        expect(disambiguatedName(email)).toBe(name);
        expect(name).not.toBe(nameFromEmail(email));
      }),
      { numRuns: 2000 },
    );
  });

  it('different emails sharing a base name get different disambiguated names', () => {
    fc.assert(
      fc.property(fc.emailAddress(), (email) => {
        const twin = email.replace(/\./g, '-'); // same base name, different email
        fc.pre(twin.toLowerCase() !== email.toLowerCase());
        expect(nameFromEmail(twin)).toBe(nameFromEmail(email));
        expect(disambiguatedName(twin)).not.toBe(disambiguatedName(email));
      }),
      { numRuns: 1000 },
    );
  });
});

describe('customerFromHost', () => {
  it.each([
    ['alice-example-com.blytz.localhost', 'alice-example-com'],
    ['a.b.blytz.localhost', undefined], // not one label
    ['Alice.blytz.localhost', undefined], // names are lower case
    ['alice.other.example', undefined],
    ['blytz.localhost', undefined],
    ['.blytz.localhost', undefined],
  ])('%s -> %s', (host, expected) => {
    expect(customerFromHost(host, 'blytz.localhost')).toBe(expected);
  });

  it('undoes customerHost for every valid name', () => {
    fc.assert(
      fc.property(fc.emailAddress(), (email) => {
        const name = nameFromEmail(email);
        expect(customerFromHost(customerHost(name, 'blytz.localhost'), 'blytz.localhost')).toBe(name);
      }),
    );
  });
});
