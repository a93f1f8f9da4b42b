/* global document, fetch, URL, sessionStorage, location */
import { clearFieldErrors, readError, sentence, setFieldError } from './forms.js';

// Sends the signup to POST /api/signup and goes on to Stripe Checkout. The API is the judge of
// every field: its per-field errors are shown next to the fields they name.

const form = document.getElementById('signup');
const formError = document.getElementById('form-error');
const submit = document.getElementById('signup-submit');
const FIELDS = ['email', 'name', 'instructions', 'telegramBotToken', 'modelProvider', 'modelApiKey'];

const email = form.elements.namedItem('email');
try {
  const remembered = sessionStorage.getItem('blytz.email');
  if (remembered && !email.value) email.value = remembered;
} catch {
  // Storage disabled: the field stays as it is.
}

function showFormError(message) {
  formError.textContent = message;
  formError.hidden = false;
}

function body() {
  const value = (id) => form.elements.namedItem(id).value;
  const out = {
    email: value('email').trim(),
    name: value('name').trim(),
    instructions: value('instructions'),
    telegramBotToken: value('telegramBotToken').trim(),
  };
  if (value('modelProvider')) out.modelProvider = value('modelProvider');
  if (value('modelApiKey').trim()) out.modelApiKey = value('modelApiKey').trim();
  return out;
}

function showErrors(error) {
  const fields = Array.isArray(error.fields) ? error.fields : [];
  const unplaced = [];
  for (const f of fields) {
    if (!(FIELDS.includes(f.field) && setFieldError(f.field, f.message))) unplaced.push(`${f.field}: ${f.message}`);
  }
  if (error.code === 'email_taken') setFieldError('email', error.message);
  const first = FIELDS.find((id) => document.getElementById(id)?.getAttribute('aria-invalid') === 'true');
  if (fields.length > 0) {
    showFormError(
      unplaced.length > 0 ? `Please fix the fields marked below. ${unplaced.join('; ')}` : 'Please fix the fields marked below.',
    );
  } else {
    showFormError(sentence(error.message));
  }
  (first ? document.getElementById(first) : formError).focus();
}

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  clearFieldErrors(form);
  formError.hidden = true;
  formError.textContent = '';
  submit.disabled = true;
  form.setAttribute('aria-busy', 'true');
  try {
    let response;
    try {
      response = await fetch('/api/signup', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body()),
      });
    } catch {
      showFormError('Blytz could not be reached. Check your connection and try again.');
      formError.focus();
      return;
    }
    if (response.status === 201) {
      const result = await response.json();
      const checkout = new URL(result.checkoutUrl);
      if (checkout.protocol !== 'https:' && checkout.protocol !== 'http:') throw new Error('unexpected checkout URL');
      try {
        sessionStorage.removeItem('blytz.email');
      } catch {
        // nothing to clean up
      }
      location.assign(checkout.href);
      return;
    }
    showErrors(await readError(response));
  } finally {
    submit.disabled = false;
    form.removeAttribute('aria-busy');
  }
});
