/* global document, URL, URLSearchParams, location, CSS, fetch, setTimeout, setInterval, clearInterval */
import { clearFieldErrors, readError, sentence, setFieldError } from './forms.js';
import { followModelUsage } from './model-usage.js';

// Follows GET /api/customers/:name/status every 2 s and shows the steps as they complete; once
// the assistant is ready, the Telegram link and the pairing form. The customer's session is an
// HttpOnly cookie the server set when it exchanged the single-use access token of the link
// (Stripe's redirect, the signup's status URL): this script never sees a token, and the address
// bar never holds one. Everything the API says is shown with textContent, never as HTML.

const POLL_MS = 2000;
const main = document.getElementById('main');
const name = main.dataset.customer;
const base = `/api/customers/${encodeURIComponent(name)}`;
const $ = (id) => document.getElementById(id);
const checkoutCancelled = new URLSearchParams(location.search).get('checkout') === 'cancelled';

let stopped = false;
let lastProblem = '';

function safeLink(anchor, url, allowed) {
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    return false;
  }
  if (!allowed(parsed)) return false;
  anchor.href = parsed.href;
  anchor.textContent = parsed.href.replace(/\/$/, '');
  anchor.rel = 'noopener noreferrer';
  return true;
}

const PROBLEMS = {
  suspended: {
    title: 'Your assistant is paused',
    text: 'Your subscription payment did not go through, so your assistant is paused. Update your card using the link in the payment email from Stripe. As soon as the payment succeeds your assistant starts again by itself, with everything it knew.',
    link: null,
  },
  cancelled: {
    title: 'Your subscription has ended',
    text: 'Your subscription was cancelled, so your assistant has been shut down. To have an assistant again, sign up again (you can use the same email).',
    link: 'Sign up again',
  },
  expired: {
    title: 'The payment link expired',
    text: 'The checkout was not completed in time, so nothing was charged. Sign up again for a fresh link.',
    link: 'Sign up again',
  },
  notFound: {
    title: 'This status link is not valid',
    text: 'We could not find an assistant for this link. Use the link from your signup, or start again.',
    link: 'Start again',
  },
};

function showProblem(kind) {
  const section = $('problem');
  if (!kind) {
    section.hidden = true;
    lastProblem = '';
    return;
  }
  const p = PROBLEMS[kind];
  $('problem-title').textContent = p.title;
  $('problem-text').textContent = p.text;
  const link = $('problem-link');
  link.textContent = p.link ?? '';
  link.parentElement.hidden = !p.link;
  section.hidden = false;
  section.dataset.kind = kind;
  // Move focus only when the situation changes, so screen readers hear it once.
  if (lastProblem !== kind) section.focus();
  lastProblem = kind;
}

function renderSteps(steps) {
  for (const step of steps) {
    const li = document.querySelector(`#steps li[data-step="${CSS.escape(step.name)}"]`);
    if (!li) continue;
    li.dataset.done = String(Boolean(step.done));
    li.querySelector('.step-title').textContent = step.title;
    li.querySelector('.step-state').textContent = step.done ? 'done' : 'waiting';
    li.querySelector('.step-message').textContent = step.done ? '' : (step.message ?? '');
  }
}

function summaryFor(view) {
  if (view.ready) return 'Your assistant is ready. Say hello on Telegram!';
  if (view.state === 'pending') return 'Waiting for your payment to be confirmed…';
  if (view.state === 'active') return 'Setting up your assistant. This usually takes less than a minute.';
  return '';
}

function render(view) {
  $('phase').textContent = view.ready ? 'Ready' : view.phase;
  renderSteps(view.steps ?? []);
  const summary = summaryFor(view);
  if (summary && $('summary').textContent !== summary) $('summary').textContent = summary;

  const expired =
    view.state === 'pending' && (view.steps ?? []).some((s) => s.name === 'payment' && /expired/i.test(s.message ?? ''));
  const problem = view.state === 'suspended' ? 'suspended' : view.state === 'cancelled' ? 'cancelled' : expired ? 'expired' : '';
  showProblem(problem);
  // Nothing will progress for an ended or lapsed signup; a suspended one shows why each step stopped.
  $('progress').hidden = problem === 'cancelled' || problem === 'expired';
  if (problem) $('summary').textContent = PROBLEMS[problem].title + '.';

  const warning = (view.conditions ?? []).find((c) => c.type === 'BillingWarning' && c.status === 'True');
  $('billing-warning').hidden = !(warning && view.state === 'active');
  $('billing-warning').textContent =
    'Your last payment failed. Stripe will try again; update your card from the payment email to keep your assistant running.';

  // An unpaid signup can be paid from here (a fresh checkout for the same signup).
  $('resume').hidden = !(view.state === 'pending' && !expired);
  $('checkout-cancelled').hidden = !(checkoutCancelled && view.state === 'pending' && !expired);

  const live = view.ready && view.state === 'active';
  const hasTelegram =
    view.telegramUrl && safeLink($('telegram-link'), view.telegramUrl, (u) => u.protocol === 'https:' && u.hostname === 't.me');
  const hasUrl = view.url && safeLink($('assistant-url'), view.url, (u) => u.protocol === 'https:' || u.protocol === 'http:');
  $('telegram-link').parentElement.hidden = !hasTelegram;
  $('assistant-url').parentElement.hidden = !hasUrl;
  $('ready').hidden = !live;
  $('pairing').hidden = !live;
  // The memory can be downloaded once there is any (active or suspended), and after cancelling
  // until the purge. The link goes with the session cookie, like every request of this page.
  const hasMemory = view.state === 'active' || view.state === 'suspended' || view.state === 'cancelled';
  $('export').hidden = !hasMemory;
  if (hasMemory) $('export-link').href = `${base}/export`;
}

async function poll() {
  if (stopped) return;
  try {
    const response = await fetch(`${base}/status`, { cache: 'no-store' });
    if (response.status === 404) {
      stopped = true;
      $('phase').textContent = 'Unknown';
      $('summary').textContent = PROBLEMS.notFound.title + '.';
      showProblem('notFound');
      return;
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
  } catch {
    $('summary').textContent = 'Having trouble reaching Blytz; still trying…';
  }
  setTimeout(poll, POLL_MS);
}

// ---- pairing ---------------------------------------------------------------------------------

const pairingForm = $('pairing-form');
const result = $('pairing-result');
const submit = $('pairing-submit');

pairingForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  clearFieldErrors(pairingForm);
  result.textContent = '';
  const code = pairingForm.elements.namedItem('code').value.trim().toUpperCase();
  // Checked here too so a typo does not spend the small per-minute budget of attempts.
  if (!/^[A-Z0-9]{8}$/.test(code)) {
    setFieldError('code', 'A pairing code is 8 letters and digits');
    $('code').focus();
    return;
  }
  submit.disabled = true;
  // The approval runs a command inside the assistant's container, which takes from a few seconds
  // to about half a minute on a small plan: say so while it runs, rather than looking frozen.
  const started = Date.now();
  const showProgress = () => {
    const seconds = Math.round((Date.now() - started) / 1000);
    result.textContent = `Approving with your assistant… ${seconds} s (this can take up to a minute)`;
  };
  showProgress();
  pairingForm.setAttribute('aria-busy', 'true');
  const ticker = setInterval(showProgress, 1000);
  try {
    let response;
    try {
      response = await fetch(`${base}/pairing`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ code }),
      });
    } catch {
      setFieldError('code', 'Blytz could not be reached. Check your connection and try again');
      return;
    } finally {
      clearInterval(ticker);
      pairingForm.removeAttribute('aria-busy');
      result.textContent = '';
    }
    if (response.ok) {
      result.textContent = 'Approved! You can chat with your assistant on Telegram now.';
      pairingForm.elements.namedItem('code').value = '';
      return;
    }
    const error = await readError(response);
    if (response.status === 404) {
      showProblem('notFound');
      return;
    }
    const fieldMessage = (error.fields ?? []).find((f) => f.field === 'code')?.message;
    setFieldError('code', sentence(fieldMessage ?? error.message));
    $('code').focus();
  } finally {
    submit.disabled = false;
  }
});

// ---- resuming an unpaid checkout ---------------------------------------------------------------

const resumeButton = $('resume-checkout');
resumeButton.addEventListener('click', async () => {
  resumeButton.disabled = true;
  $('resume-error').textContent = '';
  try {
    const response = await fetch(`${base}/checkout`, { method: 'POST' });
    if (response.status === 201) {
      const checkout = new URL((await response.json()).checkoutUrl);
      if (checkout.protocol === 'https:' || checkout.protocol === 'http:') {
        location.assign(checkout.href);
        return;
      }
    }
    $('resume-error').textContent = sentence((await readError(response)).message);
  } catch {
    $('resume-error').textContent = 'Blytz could not be reached. Check your connection and try again.';
  } finally {
    resumeButton.disabled = false;
  }
});

void poll();
followModelUsage(base);
