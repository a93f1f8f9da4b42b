/* global document, fetch, setTimeout */

// The status page's "Model use" section: GET /api/customers/:name/model-usage with the access
// token, every minute. Shown only once there is something to say (included access, or the
// customer's own key). Everything is set with textContent, never as HTML.

const POLL_MS = 60_000;
const formatter = new Intl.NumberFormat('en-US');
const date = (iso) => iso.slice(0, 10);

function render(section, view) {
  // No model at all (the platform's gateway is off): nothing the customer can act on here.
  if (view.access === 'none') {
    section.hidden = true;
    return;
  }
  const text = section.querySelector('#model-usage-text');
  const meter = section.querySelector('#model-usage-meter');
  if (view.access === 'own-key') {
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
