import { join } from 'node:path';
import express, { Router, type Response } from 'express';
import { formatPrice, type PriceSource } from '../billing/price-catalog.js';
import { MODEL_PROVIDERS, PLANS, type PlanResources } from '../domain/customer.js';
import { isDns1123Label } from '../domain/naming.js';
import { INCLUDED_ACCESS_OFFERED, type IncludedModelAccess } from '../models/included-access.js';
import { projectRoot } from '../paths.js';

/**
 * The customer's pages (contract section 3.1): landing, configure, status. Server-rendered
 * HTML with one small same-origin script each (the CSP forbids inline scripts); the scripts
 * talk to the public JSON API, so these routes need no store and hold no state. Every value
 * that reaches the HTML goes through `markup`, which escapes it.
 */

export interface PagesOptions {
  /** Folder of the static files served under /assets (default: `web/assets` in the project). */
  assetsDir?: string;
  /**
   * What the plan costs (Stripe's Price, cached). Absent: payments are not configured, and the
   * landing page says signups are closed rather than showing a price.
   */
  pricing?: PriceSource | undefined;
  /**
   * Whether "Blytz default" (included model access) is offered (default: offered). Not offered:
   * the plan says a key of the customer's own is needed and the signup form asks for one.
   */
  includedModels?: IncludedModelAccess | undefined;
}

export function createPagesRouter(options: PagesOptions = {}): Router {
  const router = Router();
  const assetsDir = options.assetsDir ?? join(projectRoot(), 'web', 'assets');
  router.use(
    '/assets',
    express.static(assetsDir, { index: false, redirect: false, dotfiles: 'ignore', maxAge: '5m', fallthrough: true }),
  );

  const modelIncluded = (options.includedModels ?? INCLUDED_ACCESS_OFFERED).offered;

  router.get('/', async (req, res) => {
    const offer: Offer = options.pricing ? { price: await options.pricing.current() } : 'closed';
    send(res, landingPage({ checkoutCancelled: req.query['checkout'] === 'cancelled', offer, modelIncluded }));
  });

  router.get('/configure', (req, res) => {
    // Only a no-JavaScript landing form puts the email here; the script hands it over in sessionStorage.
    const email = typeof req.query['email'] === 'string' ? req.query['email'].slice(0, 254) : '';
    send(res, configurePage({ email, modelIncluded }));
  });

  router.get('/status/:name', (req, res) => {
    // The URL carries the access token: no cache may keep the page.
    res.set('Cache-Control', 'no-store');
    const name = req.params['name'] ?? '';
    if (!isDns1123Label(name)) {
      send(res.status(404), notFoundPage());
      return;
    }
    send(res, statusPage({ name }));
  });

  return router;
}

function send(res: Response, page: SafeHtml): void {
  if (!res.get('Cache-Control')) res.set('Cache-Control', 'no-cache');
  res.type('html').send(page.value);
}

// ---- escaping ------------------------------------------------------------------------------

/** HTML that is already escaped (built by `markup`); everything else is text. */
export class SafeHtml {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

const ENTITIES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;', '`': '&#96;' };

/** Safe inside element content and inside quoted attribute values. */
export function escapeHtml(value: unknown): string {
  return String(value).replace(/[&<>"'`]/g, (c) => ENTITIES[c] ?? c);
}

/** A template tag: interpolated values are escaped unless they are SafeHtml (or arrays of it). */
export function markup(strings: TemplateStringsArray, ...values: unknown[]): SafeHtml {
  let out = strings[0] ?? '';
  values.forEach((value, i) => {
    out += fragment(value) + (strings[i + 1] ?? '');
  });
  return new SafeHtml(out);
}

function fragment(value: unknown): string {
  if (value instanceof SafeHtml) return value.value;
  if (Array.isArray(value)) return value.map(fragment).join('');
  if (value === undefined || value === null || value === false) return '';
  return escapeHtml(value);
}

// ---- pages -----------------------------------------------------------------------------------

function layout(title: string, script: string | undefined, main: SafeHtml, mainAttributes = markup``): SafeHtml {
  return markup`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>${title} · Blytz</title>
<link rel="stylesheet" href="/assets/style.css">
${script ? markup`<script type="module" src="/assets/${script}"></script>` : ''}
</head>
<body>
<a class="skip-link" href="#main">Skip to content</a>
<header class="site-header"><a class="brand" href="/">Blytz</a></header>
<main id="main" tabindex="-1"${mainAttributes}>
${main}
</main>
<footer class="site-footer"><p>Blytz runs a private AI assistant for you, reachable on Telegram.</p></footer>
</body>
</html>
`;
}

/** What the landing page offers: the plan with Stripe's price (undefined: not known right now), or nothing (payments not configured). */
type Offer = { price: PlanPriceOrUnknown } | 'closed';
type PlanPriceOrUnknown = Awaited<ReturnType<PriceSource['current']>>;

/** The plan signup sells (the one STRIPE_PRICE_ID is for), what it includes, and its price. */
function planCard(offer: Offer, modelIncluded: boolean): SafeHtml {
  const plan: PlanResources = PLANS.personal;
  const memory = plan.memoryBytes >= 1024 ** 3 ? `${plan.memoryBytes / 1024 ** 3} GiB` : `${plan.memoryBytes / 1024 ** 2} MiB`;
  const cpu = `${plan.nanoCpus / 1e9} CPU`;
  const price = offer === 'closed' ? undefined : offer.price;
  const formatted = price ? formatPrice(price) : undefined;
  return markup`<section class="card plan" aria-labelledby="plan-name" data-plan="personal">
  <h2 id="plan-name" class="plan-name">${price?.productName ?? 'Personal'}</h2>
  ${
    formatted
      ? markup`<p class="plan-price"><strong class="amount">${formatted.amount}</strong> <span class="period">${formatted.period}</span></p>`
      : offer === 'closed'
        ? markup`<p class="plan-price notice">Signups are closed on this server for now: payments are not set up yet.</p>`
        : markup`<p class="plan-price">The price is shown on the secure payment page before you pay.</p>`
  }
  <ul class="plan-features">
    <li>Your own assistant, running only for you in its own private space</li>
    <li>Talk to it from Telegram, through a bot of your own</li>
    <li>${memory} of memory, ${cpu}</li>
    <li>${modelIncluded ? 'AI model access included' : 'AI model not included: you bring an API key from your own model provider account'}</li>
  </ul>
</section>`;
}

function landingPage(options: { checkoutCancelled: boolean; offer: Offer; modelIncluded: boolean }): SafeHtml {
  return layout(
    'Your own AI assistant',
    'landing.js',
    markup`<h1>Your own AI assistant, on Telegram</h1>
<p class="lead">Blytz sets up a personal assistant that knows what you need help with. It runs in its own private space, and you talk to it from Telegram.</p>
${options.checkoutCancelled ? markup`<p class="notice" role="status">The payment was cancelled and nothing was charged. You can start again below.</p>` : ''}
${planCard(options.offer, options.modelIncluded)}
<form id="start" class="card" action="/configure" method="get">
  <div class="field">
    <label for="email">Your email</label>
    <p class="hint" id="email-hint">For your receipt and your assistant's status link.</p>
    <input id="email" name="email" type="email" autocomplete="email" required aria-describedby="email-hint">
  </div>
  <button type="submit">Get started</button>
</form>`,
  );
}

interface FieldOptions {
  id: string;
  label: string;
  hint?: SafeHtml | string;
  control: (describedBy: string) => SafeHtml;
}

/** A label, an optional hint, the control, and the empty slot the script fills with the API's error. */
function field({ id, label, hint, control }: FieldOptions): SafeHtml {
  const describedBy = [hint ? `${id}-hint` : '', `${id}-error`].filter(Boolean).join(' ');
  return markup`<div class="field">
  <label for="${id}">${label}</label>
  ${hint ? markup`<p class="hint" id="${id}-hint">${hint}</p>` : ''}
  ${control(describedBy)}
  <p class="error" id="${id}-error"></p>
</div>`;
}

const PROVIDER_LABELS: Record<(typeof MODEL_PROVIDERS)[number], string> = {
  anthropic: 'Anthropic',
  openai: 'OpenAI',
  openrouter: 'OpenRouter',
  google: 'Google',
};

/** The model fields: optional beside "Blytz default" when it is offered, required when it is not. */
function modelFields(modelIncluded: boolean): SafeHtml {
  return markup`<fieldset>
    <legend>${modelIncluded ? 'Your own AI model (optional)' : 'Your AI model'}</legend>
    ${field({
      id: 'modelProvider',
      label: 'Model provider',
      hint: modelIncluded
        ? 'Leave this on the default, or use an account you already have.'
        : 'This server does not include model access: choose the provider you have an account with.',
      control: (d) => markup`<select id="modelProvider" name="modelProvider"${modelIncluded ? '' : markup` required`} aria-describedby="${d}">
      ${modelIncluded ? markup`<option value="">Blytz default</option>` : ''}
      ${MODEL_PROVIDERS.map((p) => markup`<option value="${p}">${PROVIDER_LABELS[p]}</option>`)}
    </select>`,
    })}
    ${field({
      id: 'modelApiKey',
      label: 'Model API key',
      hint: modelIncluded
        ? 'Stored encrypted and handed only to your assistant.'
        : 'Required. Stored encrypted and handed only to your assistant.',
      control: (d) =>
        markup`<input id="modelApiKey" name="modelApiKey" type="password" autocomplete="off" spellcheck="false" autocapitalize="off"${modelIncluded ? '' : markup` required`} aria-describedby="${d}">`,
    })}
  </fieldset>`;
}

function configurePage(options: { email: string; modelIncluded: boolean }): SafeHtml {
  return layout(
    'Set up your assistant',
    'configure.js',
    markup`<h1>Set up your assistant</h1>
<p class="lead">Tell us a little about what you need. You can change it later.</p>
<form id="signup" class="card" novalidate>
  <div id="form-error" class="alert" role="alert" tabindex="-1" hidden></div>
  ${field({
    id: 'email',
    label: 'Your email',
    control: (d) =>
      markup`<input id="email" name="email" type="email" autocomplete="email" required value="${options.email}" aria-describedby="${d}">`,
  })}
  ${field({
    id: 'name',
    label: 'What should your assistant be called?',
    hint: 'At most 50 characters, for example “Ada”.',
    control: (d) =>
      markup`<input id="name" name="name" type="text" autocomplete="off" required maxlength="50" aria-describedby="${d}">`,
  })}
  ${field({
    id: 'instructions',
    label: 'What do you need help with?',
    hint: 'A few lines about you and what the assistant should do. At most 5,000 characters.',
    control: (d) =>
      markup`<textarea id="instructions" name="instructions" rows="6" maxlength="5000" aria-describedby="${d}"></textarea>`,
  })}
  ${field({
    id: 'telegramBotToken',
    label: 'Telegram bot token',
    hint: markup`Your assistant talks to you through a Telegram bot of your own.
    <details class="howto"><summary>How do I get a bot token?</summary>
    <ol>
      <li>In Telegram, open a chat with <a href="https://t.me/BotFather" rel="noopener noreferrer">@BotFather</a>.</li>
      <li>Send <code>/newbot</code>, then choose a display name and a username that ends in “bot”.</li>
      <li>BotFather answers with a token like <code>123456789:AAF…</code>. Copy it into this field.</li>
    </ol>
    <p>Keep the token private: whoever has it controls the bot.</p></details>`,
    control: (d) =>
      markup`<input id="telegramBotToken" name="telegramBotToken" type="password" autocomplete="off" spellcheck="false" autocapitalize="off" required aria-describedby="${d}">`,
  })}
  ${modelFields(options.modelIncluded)}
  <p class="hint">Next you pay with Stripe. Your assistant is set up as soon as the payment goes through.</p>
  <button type="submit" id="signup-submit">Continue to payment</button>
</form>`,
  );
}

const STEPS = [
  ['payment', 'Payment confirmed'],
  ['workspace', 'Workspace prepared'],
  ['assistant', 'Assistant started'],
  ['reachable', 'Reachable'],
] as const;

function statusPage(options: { name: string }): SafeHtml {
  return layout(
    'Your assistant',
    'status.js',
    markup`<h1>Your assistant</h1>
<p class="lead" id="summary" role="status">Checking on your assistant…</p>
<p>Status: <strong id="phase">Loading</strong></p>
<div id="billing-warning" class="notice" role="status" hidden></div>
<p id="checkout-cancelled" class="notice" role="status" hidden>The payment was cancelled and nothing was charged.</p>
<section id="resume" hidden aria-labelledby="resume-title">
  <h2 id="resume-title">Payment</h2>
  <p>Your signup is waiting for payment.</p>
  <p><button type="button" id="resume-checkout">Continue to payment</button></p>
  <p class="error" id="resume-error" role="alert"></p>
  <p>To change what you entered, <a href="/configure">sign up again</a> in this browser: it replaces this signup.</p>
</section>
<section id="problem" class="alert" tabindex="-1" hidden aria-labelledby="problem-title">
  <h2 id="problem-title"></h2>
  <p id="problem-text"></p>
  <p><a id="problem-link" class="button" href="/"></a></p>
</section>
<section id="progress" aria-labelledby="progress-title">
  <h2 id="progress-title">Progress</h2>
  <ol id="steps" class="steps">
    ${STEPS.map(
      ([step, title]) => markup`<li data-step="${step}" data-done="false">
      <span class="marker" aria-hidden="true"></span>
      <span class="step-title">${title}</span>
      <span class="step-state">waiting</span>
      <span class="step-message"></span>
    </li>`,
    )}
  </ol>
</section>
<section id="ready" hidden aria-labelledby="ready-title">
  <h2 id="ready-title">Start chatting</h2>
  <p>Open your bot in Telegram: <a id="telegram-link" href="#"></a></p>
  <p>Your assistant's address: <a id="assistant-url" href="#"></a></p>
</section>
<section id="model-usage" hidden aria-labelledby="model-usage-title">
  <h2 id="model-usage-title">Model use</h2>
  <p id="model-usage-text"></p>
  <meter id="model-usage-meter" min="0" aria-labelledby="model-usage-title" hidden></meter>
</section>
<section id="pairing" hidden aria-labelledby="pairing-title">
  <h2 id="pairing-title">Approve your Telegram account</h2>
  <p>The first time you message your bot, it answers with a pairing code. Enter the code here so your assistant knows it is you.</p>
  <form id="pairing-form" class="card" novalidate>
    ${field({
      id: 'code',
      label: 'Pairing code',
      hint: '8 letters and digits, for example ABCD2345.',
      control: (d) =>
        markup`<input id="code" name="code" type="text" inputmode="text" autocomplete="one-time-code" autocapitalize="characters" spellcheck="false" maxlength="12" required aria-describedby="${d}">`,
    })}
    <button type="submit" id="pairing-submit">Approve</button>
    <p id="pairing-result" class="success" role="status"></p>
  </form>
</section>
<section id="export" hidden aria-labelledby="export-title">
  <h2 id="export-title">Your assistant's memory</h2>
  <p>Download everything your assistant remembers (its notes, conversations and settings, without any password or token) as one archive. You can do this until your data is deleted, also after you cancel.</p>
  <p><a id="export-link" class="button" href="#" download>Download my assistant's memory</a></p>
</section>
<noscript><p class="alert">This page needs JavaScript to show live progress.</p></noscript>`,
    markup` data-customer="${options.name}"`,
  );
}

function notFoundPage(): SafeHtml {
  return layout(
    'Not found',
    undefined,
    markup`<h1>This status link is not valid</h1>
<p>Use the link from your signup, or <a href="/">start again</a>.</p>`,
  );
}
