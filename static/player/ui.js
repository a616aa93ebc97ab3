/*
 * The player's controls: go live, the scrub bar, the delay shown, the quality menu and the
 * switch between the two players.
 */
import { urlWithChoice } from './choice.js';
import { el } from './util.js';

/* ----------------------------------------------------------------------- the page */

function Ui(root, choice) {
  var self = this;
  this.root = root;
  this.goLiveButton = el('button', { type: 'button', 'class': 'go-live', text: 'Go live' });
  this.behind = el('span', { 'class': 'behind', 'aria-live': 'off' });
  this.scrub = el('input', { type: 'range', 'class': 'scrub', min: '0', max: '0', step: '0.1',
                              value: '0', 'aria-label': 'Position in the stream' });
  this.modeText = el('span', { 'class': 'mode-text' });
  this.switchLink = el('a', { 'class': 'switch-player', 'data-player-switch': '' });
  this.note = el('p', { 'class': 'player-note', hidden: '' });
  this.qualitySelect = el('select', { 'class': 'quality', 'aria-label': 'Quality', hidden: '' });
  this.qualitySelect.addEventListener('change', function () {
    if (self.onQuality) { self.onQuality(self.qualitySelect.value); }
  });
  root.appendChild(el('div', { 'class': 'controls-row' },
    [this.goLiveButton, this.scrub, this.behind, this.qualitySelect]));
  root.appendChild(el('div', { 'class': 'controls-row small' }, [this.modeText, this.switchLink]));
  root.appendChild(this.note);
  this.dragging = false;
  this.scrub.addEventListener('input', function () { self.dragging = true; });
  this.scrub.addEventListener('change', function () {
    self.dragging = false;
    if (self.onScrub) { self.onScrub(parseFloat(self.scrub.value)); }
  });
  this.goLiveButton.addEventListener('click', function () { if (self.onGoLive) { self.onGoLive(); } });
  root.hidden = false;
  this.choice = choice;
}

Ui.prototype.setMode = function (mode, reason) {
  this.root.dataset.mode = mode;
  var other = mode === 'mse' ? 'plain' : 'mse';
  this.modeText.textContent = mode === 'mse' ? 'Low-latency player' : 'Plain player';
  this.switchLink.textContent = mode === 'mse' ? 'use the plain player' : 'try the low-latency player';
  this.switchLink.href = urlWithChoice(location.href, other).href;
  this.goLiveButton.hidden = this.scrub.hidden = mode !== 'mse';
  // The MSE player's menu is the one quality control: next to it, the page's plain links
  // (for no-JS viewers) would lose to the menu's remembered choice ("source" reloading low).
  var links = document.getElementById('qualities');
  if (links) { links.hidden = mode === 'mse'; }
  if (reason) {
    this.root.dataset.fallback = reason;
    this.message('Playing the plain stream: ' + reason + '.');
  }
};

Ui.prototype.message = function (text) {
  this.note.textContent = text || '';
  this.note.hidden = !text;
};

/** Reflect the MSE player's state; data-attributes let tests and styles read it too. */
Ui.prototype.show = function (player) {
  var tl = player.tl, video = player.video, root = this.root;
  root.classList.toggle('is-offline', !tl || !tl.online);
  if (!tl || !tl.online) {
    root.dataset.state = tl ? tl.status : 'starting';
    this.message(tl && tl.status === 'ended' ? 'The stream has ended.'
      : tl ? 'The stream is offline. This player reconnects by itself when it is back.' : '');
    return;
  }
  this.message('');
  this.showQualities(player);
  var edge = player.edge();
  if (!player.started || edge === null) { root.dataset.state = 'starting'; this.behind.textContent = 'Starting…'; return; }
  var behind = Math.max(0, edge - video.currentTime);
  root.dataset.state = player.live ? 'live' : 'dvr';
  root.dataset.behind = behind.toFixed(2);
  root.dataset.extraDelay = player.extraDelay.toFixed(1);  // added after stalls
  this.behind.textContent = (player.live ? '' : 'Replay · ') + behind.toFixed(1) + ' s behind live';
  this.goLiveButton.classList.toggle('is-live', player.live);
  this.goLiveButton.textContent = player.live ? 'Live' : 'Go live';
  if (!this.dragging) {
    this.scrub.min = tl.segments[0].start.toFixed(1);
    this.scrub.max = edge.toFixed(1);
    this.scrub.value = video.currentTime.toFixed(1);
  }
};

/** The rendition menu: "Auto" plus every quality; data-quality says which one plays. */
Ui.prototype.showQualities = function (player) {
  var list = player.qualities(), select = this.qualitySelect, root = this.root;
  select.hidden = list.length < 2;
  if (select.hidden) { return; }
  var names = ['auto'].concat(list.map(function (q) { return q.name; }));
  if (select.dataset.names !== names.join(' ')) {
    select.textContent = '';
    select.appendChild(el('option', { value: '', text: 'Auto' }));
    list.forEach(function (q) {
      var label = q.name + (q.resolution ? ' ' + q.resolution.split('x')[1] + 'p' : '');
      select.appendChild(el('option', { value: q.name, text: label }));
    });
    select.dataset.names = names.join(' ');
  }
  if (document.activeElement !== select) { select.value = player.auto ? '' : player.tl.quality; }
  root.dataset.quality = player.quality || '';
  root.dataset.auto = player.auto ? '1' : '0';
  if (player.throughput) { root.dataset.throughput = String(Math.round(player.throughput)); }
};

Ui.prototype.showPlain = function (player) {
  var tl = player.tl, video = player.video, edge = player.edge();
  this.root.dataset.state = tl ? (tl.online ? 'live' : tl.status) : 'starting';
  // Firefox counts a progressive MP4's currentTime from the response's first picture, not
  // from its media time: a position before every listed segment says nothing of the delay.
  this.behind.hidden = !(tl && tl.online && edge !== null && video.currentTime > 0 &&
                         tl.segments.length && video.currentTime >= tl.segments[0].start);
  if (!this.behind.hidden) {
    var behind = Math.max(0, edge - video.currentTime);
    this.root.dataset.behind = behind.toFixed(2);
    this.behind.textContent = behind.toFixed(1) + ' s behind live';
  } else {
    delete this.root.dataset.behind;
  }
};

export { Ui };
