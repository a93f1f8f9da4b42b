/* global document, fetch, setTimeout */

// The status page's "Model use" section: GET /api/customers/:name/model-usage with the access
// token, every minute. Shown once there is something to say: included access, the customer's own
// key, or that the assistant has no model at all. Everything is set with textContent, never as HTML.

const POLL_MS = 60_000;
const formatter = new Intl.NumberFormat('en-US');
const date = (iso) => iso.slice(0, 10);

function render(section, view) {
  const text = section.querySelector('#model-usage-text');
  const meter = section.querySelector('#model-usage-meter');
  if (view.access === 'none') {
    // No key of their own, and this server does not include model access (its condition ModelReady is False).
    text.textContent =
      'Your assistant has no AI model to answer with: this server does not include model access, and no model key of your own was given. Please contact the team running this service.';
    meter.hidden = true;
  } else if (view.access === 'own-key') {
    text.textContent = 'Your assistant uses your own model provider key; Blytz does not meter it.';
    meter.hidden = true;
  } else {
    const used = formatter.format(view.usedTokens);
    const included = formatter.format(view.includedTokens);
    text.textContent = view.exhausted
      ? `Your assistant has used this month's model allowance (${used} of ${included} tokens). It tells you so when you message it, and it renews on ${date(view.renewsAt)}.`
      : `This month your assistant has used ${used} of its ${included} included tokens. The allowance renews on ${date(view.renewsAt)}.`;
    meter.max = view.ceilingTokens ?? view.includedTokens;
    meter.value = Math.min(view.usedTokens, meter.max);
    meter.hidden = false;
  }
  section.hidden = false;
}

/** Starts following the customer's model use; `base` is /api/customers/<name> (the session cookie goes with it). */
export function followModelUsage(base) {
  const section = document.getElementById('model-usage');
  if (!section) return;
  const poll = async () => {
    try {
      const response = await fetch(`${base}/model-usage`, { cache: 'no-store' });
      if (response.ok) render(section, await response.json());
    } catch {
      // The main status poll already says when Blytz cannot be reached.
    }
    setTimeout(poll, POLL_MS);
  };
  void poll();
}
