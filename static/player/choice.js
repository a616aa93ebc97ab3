/*
 * Which player the viewer chose (?player=mse or plain): carried in same-origin links and
 * forms, never in a cookie.
 */
import { el } from './util.js';

var PARAM = 'player';

/* ------------------------------------------- the player choice, kept in the URLs */

function playerChoice() {
  var value = new URLSearchParams(location.search).get(PARAM);
  return value === 'mse' || value === 'plain' ? value : null;
}

function urlWithChoice(href, choice) {
  var url = new URL(href, location.href);
  if (url.origin !== location.origin) { return null; }
  url.searchParams.set(PARAM, choice);
  return url;
}

/** Add ?player= to same-origin links and forms in `scope`, so the choice follows the viewer. */
function carryChoice(scope, choice) {
  scope.querySelectorAll('a[href]').forEach(function (link) {
    var raw = link.getAttribute('href');
    if (!raw || raw.charAt(0) === '#' || /^(javascript|mailto|data):/i.test(raw)) { return; }
    if (link.hasAttribute('data-player-switch')) { return; }  // it names the other player
    var url = urlWithChoice(link.href, choice);
    if (url && url.href !== link.href) { link.href = url.href; }
  });
  scope.querySelectorAll('form').forEach(function (form) {
    if ((form.getAttribute('method') || 'get').toLowerCase() === 'get') {
      // A GET form replaces the action's query with its fields: carry it as a field.
      var field = form.querySelector('input[name="' + PARAM + '"]');
      if (!field) {
        form.appendChild(el('input', { type: 'hidden', name: PARAM, value: choice }));
      }
    } else {
      var url = urlWithChoice(form.action, choice);
      if (url) { form.action = url.href; }
    }
  });
}

function keepChoice(choice) {
  if (!choice) { return; }
  carryChoice(document, choice);
  new MutationObserver(function () { carryChoice(document, choice); })
    .observe(document.body, { childList: true, subtree: true });
  function frame(iframe) {
    try {
      if (iframe.contentDocument && iframe.contentDocument.body) {
        carryChoice(iframe.contentDocument, choice);
      }
    } catch (e) { /* another origin: not ours to touch */ }
  }
  document.querySelectorAll('iframe').forEach(function (iframe) {
    frame(iframe);
    iframe.addEventListener('load', function () { frame(iframe); });
  });
}

export { keepChoice, playerChoice, urlWithChoice };
