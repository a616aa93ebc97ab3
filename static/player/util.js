/*
 * Small helpers for every part of the player: building elements, time, the viewer's token
 * in URLs, JSON fetches, and the controls' root element.
 */
var ROOT = document.getElementById('player-controls');

/* ---------------------------------------------------------------- small helpers */

function el(tag, attrs, children) {
  var node = document.createElement(tag);
  Object.keys(attrs || {}).forEach(function (key) {
    if (key === 'text') { node.textContent = attrs[key]; } else { node.setAttribute(key, attrs[key]); }
  });
  (children || []).forEach(function (child) { node.appendChild(child); });
  return node;
}

function wallSeconds() { return (performance.timeOrigin + performance.now()) / 1000; }

function clamp(value, low, high) { return Math.min(high, Math.max(low, value)); }

function sleep(ms) { return new Promise(function (resolve) { setTimeout(resolve, ms); }); }

/** The viewer's token rides on video requests so the server counts this viewer as watching. */
function withToken(url) {
  var side = document.querySelector('[data-token]');
  var token = side ? side.getAttribute('data-token') : new URLSearchParams(location.search).get('token');
  if (!token) { return url; }
  return url + (url.indexOf('?') < 0 ? '?' : '&') + 'token=' + encodeURIComponent(token);
}

function getJson(url, signal) {
  return fetch(url, { cache: 'no-store', credentials: 'same-origin', signal: signal })
    .then(function (response) {
      if (!response.ok) { throw new Error(url.split('?')[0] + ' answered ' + response.status); }
      return response.json();
    });
}

function formatClock(seconds) {
  seconds = Math.max(0, Math.floor(seconds));
  var h = Math.floor(seconds / 3600), m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
  return h + ':' + (m < 10 ? '0' : '') + m + ':' + (s < 10 ? '0' : '') + s;
}

var QUALITY_KEY = 'livestream-quality';
// A fetch not done after this long is lost (a circuit died under it): ask again.
var FETCH_TIMEOUT_MS = 4000;

export { FETCH_TIMEOUT_MS, QUALITY_KEY, ROOT, clamp, el, formatClock, getJson, sleep, wallSeconds, withToken };
