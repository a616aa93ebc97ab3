/*
 * Title, live light, uptime, viewer count and the watch party's notice, from the /events
 * push channel, replacing the self-refreshing info frame no-JS viewers get.
 */
import { ROOT, el, formatClock, getJson, withToken } from './util.js';

/** Title, live light, uptime and viewer count from the push channel, without reloads. */
function LiveInfo(clock) {
  var frame = document.querySelector('iframe.info');
  this.clock = clock;
  this.light = el('span', { 'class': 'light' });
  this.status = el('span', { 'class': 'status' });
  this.title = el('h1', { 'class': 'title' });
  this.uptime = el('span', { 'class': 'uptime', hidden: '' });
  this.viewers = el('span', { 'class': 'viewers', hidden: '' });
  this.notice = el('p', { 'class': 'notice party', hidden: '' });  // the watch party's state
  this.bar = el('div', { 'class': 'info-bar live-info' },
    [this.light, this.status, this.title, this.viewers, this.uptime, this.notice]);
  this.startedAt = null;
  this.paused = false;
  this.startsAt = null;
  this.listeners = [];
  if (frame) {
    // The frame refreshes itself for no-JS viewers; this bar replaces it live.
    frame.parentNode.insertBefore(this.bar, frame);
    frame.parentNode.removeChild(frame);
  } else {
    ROOT.parentNode.insertBefore(this.bar, ROOT.nextSibling);
  }
}

LiveInfo.prototype.setStatus = function (data) {
  this.light.className = 'light ' + data.status;
  this.light.title = data.status;
  this.status.textContent = (data.paused ? 'paused' : String(data.status)).toUpperCase();
  if (typeof data.title === 'string') {
    this.title.textContent = data.title;
    document.title = data.title;
  }
  this.startedAt = data.online ? data.started_at : null;
  this.paused = !!data.paused;
  this.startsAt = typeof data.starts_at === 'number' ? data.starts_at : null;
  this.tick();
  this.listeners.forEach(function (listener) { listener(data); });
};

LiveInfo.prototype.setViewers = function (count) {
  this.viewers.textContent = count + (count === 1 ? ' viewer' : ' viewers');
  this.viewers.hidden = false;
  ROOT.dataset.viewers = String(count);
};

LiveInfo.prototype.tick = function () {
  if (this.startedAt) {
    this.uptime.textContent = 'Uptime ' + formatClock(this.clock.now() - this.startedAt);
    this.uptime.hidden = false;
  } else {
    this.uptime.hidden = true;
  }
  var left = this.startsAt === null ? 0 : Math.ceil(this.startsAt - this.clock.now());
  if (this.paused) {
    this.notice.textContent = 'Paused by the host: the video goes on by itself when the host resumes.';
  } else if (left > 0) {
    this.notice.textContent = 'Starts in ' + formatClock(left) + ' for everyone.';
  }
  this.notice.hidden = !(this.paused || left > 0);
};

LiveInfo.prototype.connect = function () {
  var self = this;
  function refresh() { getJson('/api/status').then(function (data) { self.setStatus(data); }).catch(function () {}); }
  refresh();
  setInterval(function () { self.tick(); }, 1000);
  if (!window.EventSource) { setInterval(refresh, 10000); return; }
  var source = new EventSource(withToken('/events'));
  source.addEventListener('status', function (event) { self.setStatus(JSON.parse(event.data)); });
  source.addEventListener('viewers', function (event) {
    var data = JSON.parse(event.data);
    if (typeof data.count === 'number') { self.setViewers(data.count); }
  });
  source.addEventListener('resync', refresh);
  source.addEventListener('open', refresh);  // after a reconnect: catch up on what was missed
};

export { LiveInfo };
