/* global document, sessionStorage, location */
// The email travels to /configure in sessionStorage rather than in the URL, so it does not end
// up in browser history or server logs. Without JavaScript the form's GET still works.
const form = document.getElementById('start');
form?.addEventListener('submit', (event) => {
  const email = form.elements.namedItem('email');
  if (!email.checkValidity()) return; // let the browser explain
  event.preventDefault();
  try {
    sessionStorage.setItem('blytz.email', email.value.trim());
  } catch {
    // Storage disabled: the user types the email again on the next page.
  }
  location.assign('/configure');
});
