/* global document */
// Shared by the signup and pairing forms: an API error shows up next to the field it concerns.
// Text only (textContent), never HTML: messages may echo what the user typed.

/** "must be an email address" -> "Must be an email address". */
export function sentence(message) {
  const text = String(message ?? '').trim();
  return text ? text[0].toUpperCase() + text.slice(1) : 'Please check this field';
}

export function setFieldError(id, message) {
  const control = document.getElementById(id);
  const slot = document.getElementById(`${id}-error`);
  if (!control || !slot) return false;
  slot.textContent = sentence(message);
  control.setAttribute('aria-invalid', 'true');
  return true;
}

export function clearFieldErrors(form) {
  for (const control of form.querySelectorAll('[aria-invalid]')) control.removeAttribute('aria-invalid');
  for (const slot of form.querySelectorAll('.error')) slot.textContent = '';
}

/** The JSON error body `{error: {code, message, fields}}`, or a stand-in when the body is not one. */
export async function readError(response) {
  try {
    const body = await response.json();
    if (body && typeof body.error === 'object' && body.error) return body.error;
  } catch {
    // Not JSON (a proxy's error page): fall through.
  }
  return { code: 'http_' + response.status, message: `Something went wrong (HTTP ${response.status}). Please try again.` };
}
