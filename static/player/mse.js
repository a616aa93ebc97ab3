/*
 * The MSE player: plays the HLS segments, and the segment in progress fragment by fragment
 * (/fragments), at the shared delay behind live by steering its playback rate; scrubs back,
 * jumps small gaps, and steps renditions down and up with the throughput it measures.
 */
import { addFollowing } from './follow.js';
import { addQualityChoice } from './quality.js';
import { liveEdge } from './timeline.js';
import { FETCH_TIMEOUT_MS, clamp, sleep, withToken } from './util.js';

var JUMP_SECONDS = 1.0;        // further than this from the target: seek instead of steering
var DEADBAND_SECONDS = 0.03;   // closer than this: play at normal speed
var RATE_GAIN = 0.5;           // playback-rate change per second of error
var RATE_LIMIT = 0.1;          // at most 10% faster or slower: gentle enough to listen to
var READ_AHEAD_SECONDS = 8;    // while scrubbed back, fetch this far ahead of the position
var BACK_BUFFER_SECONDS = 30;  // keep this much already-played media, drop the rest
var STALL_EXTRA_SECONDS = 0.5; // a viewer that stalls moves back this much, up to the cap
var STALL_EXTRA_LIMIT = 6;
var START_TIMEOUT_MS = 20000;  // live but nothing playing by then: MSE is not working here
// A segment's fetch is lost (a circuit died under it) after this many times its duration, and
// at least FETCH_TIMEOUT_MS (the init segment's limit); then it is asked again.
var FETCH_TIMEOUT_DURATIONS = 3;
var GAP_LIMIT_SECONDS = 2.5;   // stuck before a hole in the buffer at most this wide: jump it

/* ------------------------------------------------------------------ the MSE player */

function MsePlayer(video, clock, ui, onFail) {
  this.video = video;
  this.clock = clock;
  this.ui = ui;
  this.onFail = onFail;
  this.tl = null;
  this.generation = null;
  this.mediaSource = null;
  this.buffer = null;
  this.appended = new Map();   // sequence -> segment, what this source buffer holds
  this.missing = new Set();    // sequences the server no longer had
  this.busy = false;
  this.started = false;
  this.live = true;            // following the shared target, or scrubbed/paused (DVR)
  this.extraDelay = 0;
  this.ownSeek = false;
  this.lastSeekAt = 0;
  this.failures = 0;
  this.onlineSince = null;
  this.dead = false;
  this.quality = null;         // the rendition the source buffer was last given an init of
  this.codecs = null;
  this.auto = true;            // choose the rendition by measured throughput
  this.upStreak = 0;
  this.lastDownAt = -Infinity;
  this.throughput = null;      // bits per second, the last segment fetch
  this.probing = false;        // following: timing a segment of the next rendition up
  this.probeWait = 0;          // ... and the wait after the last such try (ms; doubles)
  this.probeAfter = 0;
  this.wanted = null;          // a rendition asked for: nothing is fetched until its timeline comes
  this.onQuality = null;       // (name) -> ask the feed for that rendition's timeline
  this.follow = null;          // following the live edge: {sequence, index} of the next fragment
  this.pushing = false;        // reading /fragments
  this.followAfter = 0;        // refused as too busy: whole segments until then (ms)
  this.fragments = 0;          // fragments appended while following (shown in data-fragments)
  this.bindVideo();
}

MsePlayer.supported = function (codecs) {
  var type = 'video/mp4; codecs="' + (codecs || 'avc1.42e01e,mp4a.40.2') + '"';
  return !!(window.MediaSource && MediaSource.isTypeSupported(type));
};

MsePlayer.prototype.bindVideo = function () {
  var self = this, video = this.video;
  this.handlers = {
    seeking: function () {
      if (self.ownSeek || !self.started) { return; }
      // The viewer used the video's own seek bar: live again only if they landed there.
      self.live = Math.abs(video.currentTime - self.target()) < JUMP_SECONDS;
    },
    seeked: function () { self.ownSeek = false; self.pump(); },
    pause: function () { if (self.started && !video.ended) { self.live = false; } },
    play: function () { if (!self.started) { self.live = true; } },
    waiting: function () {
      // A stall while following live: this viewer needs more room behind the edge.
      if (self.live && self.started && !video.seeking && performance.now() - self.lastSeekAt > 2000) {
        self.extraDelay = Math.min(STALL_EXTRA_LIMIT, self.extraDelay + STALL_EXTRA_SECONDS);
      }
    },
    error: function () { self.fail('the browser could not decode the stream'); }
  };
  Object.keys(this.handlers).forEach(function (name) { video.addEventListener(name, self.handlers[name]); });
  this.timer = setInterval(function () { self.tick(); }, 250);
};

MsePlayer.prototype.destroy = function () {
  var self = this;
  this.dead = true;
  clearInterval(this.timer);
  Object.keys(this.handlers).forEach(function (name) { self.video.removeEventListener(name, self.handlers[name]); });
  this.detach();
};

MsePlayer.prototype.fail = function (reason) {
  if (this.dead) { return; }
  this.destroy();
  this.onFail(reason);
};

/** A fresh MediaSource for a (new) generation of the stream. */
MsePlayer.prototype.attach = function (tl) {
  var self = this;
  this.detach();
  if (!MsePlayer.supported(tl.codecs)) {
    this.fail('this browser cannot play ' + (tl.codecs || 'the stream') + ' with MSE');
    return;
  }
  this.generation = tl.generation;
  this.ui.root.dataset.generation = String(tl.generation);
  this.appended = new Map();
  this.missing = new Set();
  this.started = false;
  this.live = true;
  this.failures = 0;
  this.follow = null;
  var mediaSource = new MediaSource();
  this.mediaSource = mediaSource;
  this.objectUrl = URL.createObjectURL(mediaSource);
  this.video.removeAttribute('src');
  this.video.src = this.objectUrl;
  mediaSource.addEventListener('sourceopen', function () {
    if (mediaSource !== self.mediaSource) { return; }
    try {
      self.buffer = mediaSource.addSourceBuffer('video/mp4; codecs="' + tl.codecs + '"');
    } catch (e) {
      self.fail('MSE refused the stream: ' + e.message);
      return;
    }
    self.buffer.addEventListener('error', function () { self.fail('MSE could not append a segment'); });
    self.initPending = true;
    self.pump();
  }, { once: true });
};

MsePlayer.prototype.detach = function () {
  this.busy = false;
  if (this.fetchControl) { this.fetchControl.abort(); }
  this.buffer = null;
  this.mediaSource = null;
  if (this.objectUrl) { URL.revokeObjectURL(this.objectUrl); this.objectUrl = null; }
};

MsePlayer.prototype.setTimeline = function (tl) {
  this.tl = tl;
  this.wanted = null;  // the feed sends nothing of the old rendition once it switched
  if (!tl.online) { this.onlineSince = null; return; }
  if (this.onlineSince === null) { this.onlineSince = performance.now(); }
  if (tl.generation !== this.generation || !this.mediaSource) {
    this.attach(tl);  // first start, or the stream restarted: its media time begins anew
  } else {
    if (this.quality !== null && tl.quality !== this.quality) {
      // Another rendition: its init segment first, then its segments from the next
      // sequence on. What is buffered stays, so the picture never stops at the switch.
      this.initPending = true;
    }
    this.pump();
  }
};


MsePlayer.prototype.edge = function () { return liveEdge(this.tl, this.clock); };

/** Where every viewer should be right now: the same for all, a fixed delay behind the edge. */
MsePlayer.prototype.target = function () {
  var tl = this.tl, edge = this.edge();
  if (edge === null) { return 0; }
  var last = tl.segments[tl.segments.length - 1], end = last.start + last.duration;
  if (tl.partial) { end = tl.partial.start + tl.partial.duration; }
  // Following fragments, what exists has grown since this timeline came: what we hold.
  var ranges = this.video.buffered;
  if (this.follow && ranges.length) { end = Math.max(end, ranges.end(ranges.length - 1)); }
  // Following parts, every fragment comes pushed half a round trip after it was written: a
  // round trip of room. Whole segments (no parts, or following refused), each asked for: a
  // segment and a margin behind, and two round trips.
  var trip = this.clock.synced ? this.clock.roundTrip : 0;
  var delay = this.mayFollow() ? tl.delay + trip
    : tl.part_target ? tl.target_duration + 0.75 + 2 * trip : tl.delay;
  var aim = edge - delay - this.extraDelay;
  // Never aim past what exists (an encoder slower than real time would pull us there).
  return clamp(aim, tl.segments[0].start, end - 0.25);
};

MsePlayer.prototype.position = function () {
  return this.started ? this.video.currentTime : this.target();
};

MsePlayer.prototype.nextSegment = function () {
  var segments = this.tl.segments, position = this.position();
  var horizon = position + (this.live ? 3600 : READ_AHEAD_SECONDS);
  for (var i = 0; i < segments.length; i++) {
    var seg = segments[i];
    if (seg.start + seg.duration <= position + 0.05) { continue; }
    if (seg.start > horizon) { break; }
    if (!this.appended.has(seg.sequence) && !this.missing.has(seg.sequence)) { return seg; }
  }
  return null;
};

MsePlayer.prototype.append = function (data) {
  var buffer = this.buffer;
  return new Promise(function (resolve, reject) {
    function done() { buffer.removeEventListener('error', failed); resolve(); }
    function failed() { buffer.removeEventListener('updateend', done); reject(new Error('append failed')); }
    buffer.addEventListener('updateend', done, { once: true });
    buffer.addEventListener('error', failed, { once: true });
    buffer.appendBuffer(data);
  });
};

MsePlayer.prototype.fetchBytes = function (uri, seconds) {
  var control = this.fetchControl = new AbortController();
  var limit = Math.max(FETCH_TIMEOUT_MS, (seconds || 0) * FETCH_TIMEOUT_DURATIONS * 1000);
  var timer = setTimeout(function () { control.timedOut = true; control.abort(); }, limit);
  return fetch(withToken(uri), { credentials: 'same-origin', signal: control.signal })
    .then(function (response) {
      if (response.status === 404) { var gone = new Error('gone'); gone.gone = true; throw gone; }
      if (!response.ok) { throw new Error(uri + ' answered ' + response.status); }
      return response.arrayBuffer();
    }).finally(function () { clearTimeout(timer); });
};

/** Fetch and append the next segment the position needs; one at a time, then again. */
MsePlayer.prototype.pump = function () {
  var self = this, buffer = this.buffer, tl = this.tl;
  if (this.dead || this.busy || !buffer || !tl || buffer.updating || tl.generation !== this.generation) { return; }
  if (this.wanted !== null) { return; }  // the chosen rendition's timeline is on the way
  var seg = null, uri;
  if (this.initPending) {
    uri = tl.init;
  } else {
    seg = this.nextSegment();
    if (!seg) {
      var next = this.followFrom();
      if (next) { this.pumpPushed(next); }
      return;
    }
    uri = seg.uri;
  }
  this.busy = true;
  var fetchedFrom = performance.now(), quality = tl.quality, codecs = tl.codecs;
  var fetching = this.fetchBytes(uri, seg && seg.duration), control = this.fetchControl;
  if (seg) { this.watchFetch(seg, control); }
  fetching.then(function (data) {
    control.arrived = true;
    if (buffer !== self.buffer) { return; }
    var seconds = (performance.now() - fetchedFrom) / 1000;
    if (!seg && self.codecs && codecs !== self.codecs && buffer.changeType) {
      buffer.changeType('video/mp4; codecs="' + codecs + '"');  // e.g. High -> Main profile
    }
    return self.append(data).then(function () {
      if (seg) {
        self.appended.set(seg.sequence, seg);
        self.adapt(seg, data.byteLength, seconds);
      } else {
        self.initPending = false;
        self.quality = quality;
        self.codecs = codecs;
      }
      self.failures = 0;
    });
  }).catch(function (error) {
    if (buffer !== self.buffer || (error.name === 'AbortError' && !control.timedOut)) { return; }
    if (error.gone && seg) { self.missing.add(seg.sequence); return; }
    return self.failed(error, 'segments');
  }).then(function () { self.fetched(buffer); });
};

/** A fetch of `what` failed: room made when the buffer is full, else counted (five in a row
 * give up on MSE) and waited for, a little longer each time. */
MsePlayer.prototype.failed = function (error, what) {
  if (error.name === 'QuotaExceededError') { this.evict(5); return null; }
  this.failures += 1;
  if (this.failures >= 5) { this.fail(what + ' keep failing: ' + error.message); }
  return sleep(500 * this.failures);
};

/** A fetch is over, whatever came of it: on to the next one (unless the buffer was replaced). */
MsePlayer.prototype.fetched = function (buffer) {
  if (buffer !== this.buffer) { return; }
  this.busy = false;
  this.tick();
  this.pump();
};


MsePlayer.prototype.buffered = function (time) {
  var ranges = this.video.buffered;
  for (var i = 0; i < ranges.length; i++) {
    if (time >= ranges.start(i) && time < ranges.end(i)) { return true; }
  }
  return false;
};

/** Seek, nudged into a buffered range when the target falls a hair before one begins. */
MsePlayer.prototype.seek = function (time) {
  var ranges = this.video.buffered;
  for (var i = 0; i < ranges.length; i++) {
    if (time < ranges.start(i) && ranges.start(i) - time < 0.3) { time = ranges.start(i) + 0.01; break; }
  }
  this.ownSeek = true;
  this.lastSeekAt = performance.now();
  this.video.currentTime = time;
};

/** Drop media played long ago so a long session does not hold the whole stream. */
MsePlayer.prototype.evict = function (keepSeconds) {
  var buffer = this.buffer, ranges = this.video.buffered;
  if (!buffer || buffer.updating || !ranges.length) { return; }
  var until = this.video.currentTime - (keepSeconds || BACK_BUFFER_SECONDS);
  if (ranges.start(0) >= until - 1) { return; }
  try {
    buffer.remove(0, until);
  } catch (e) { return; }
  var self = this, oldest = this.tl.segments.length ? this.tl.segments[0].sequence : -1;
  this.appended.forEach(function (seg, sequence) {
    if (seg.start + seg.duration <= until + 0.05 || sequence < oldest) { self.appended.delete(sequence); }
  });
};

MsePlayer.prototype.goLive = function () {
  if (!this.tl || !this.started) { return; }
  this.live = true;
  this.seek(this.target());
  this.video.play().catch(function () { /* the viewer presses play */ });
};

MsePlayer.prototype.scrubTo = function (time) {
  if (!this.started) { return; }
  var tl = this.tl, first = tl.segments[0];
  this.live = false;
  this.video.playbackRate = 1;
  this.seek(Math.max(first.start + 0.05, time));
  this.pump();
};

/** Stuck where nothing is buffered, with media a little further on (a switch of rendition,
 * a segment the server no longer had): move to where the media is, as long as that is not
 * past the shared target. A seek into the hole would otherwise wait for ever. */
MsePlayer.prototype.jumpGap = function (target) {
  var video = this.video, now = video.currentTime, ranges = video.buffered;
  if (video.paused || video.readyState >= 3 || this.buffered(now)) { return false; }
  for (var i = 0; i < ranges.length; i++) {
    var start = ranges.start(i);
    if (start > now && start - now < GAP_LIMIT_SECONDS && start <= target + JUMP_SECONDS) {
      this.seek(start + 0.01);
      return true;
    }
  }
  return false;
};

/** Four times a second: start, steer towards the shared target, keep the buffer small. */
MsePlayer.prototype.tick = function () {
  var tl = this.tl, video = this.video;
  if (this.dead || !tl || !tl.online || tl.generation !== this.generation || !tl.segments.length) {
    this.ui.show(this);
    return;
  }
  var target = this.target();
  if (!this.started) {
    if (!this.clock.tried) {
      // wait: the target is only known once the clock is
    } else if (!this.initPending && (this.buffered(target + 0.01) || this.buffered(target + 0.3))) {
      this.started = true;
      this.seek(target);
      video.play().catch(function () { /* autoplay blocked: the viewer presses play */ });
    } else if (this.onlineSince !== null && performance.now() - this.onlineSince > START_TIMEOUT_MS) {
      this.fail('nothing played within ' + START_TIMEOUT_MS / 1000 + ' s');
      return;
    }
  } else if (this.live && this.jumpGap(target)) {
    // moved past a hole; steering resumes on the next tick
  } else if (this.live && !video.paused && !video.seeking) {
    var error = video.currentTime - target;
    if (Math.abs(error) > JUMP_SECONDS) {
      video.playbackRate = 1;
      this.seek(target);
    } else if (Math.abs(error) < DEADBAND_SECONDS) {
      video.playbackRate = 1;
    } else {
      video.playbackRate = 1 - clamp(error * RATE_GAIN, -RATE_LIMIT, RATE_LIMIT);
    }
  } else if (!this.live) {
    video.playbackRate = 1;
    this.stopFollowing();  // scrubbed back or paused: a pushed response would go on filling
    var oldest = tl.segments[0].start;
    if (!video.seeking && video.currentTime < oldest && !this.buffered(video.currentTime)) {
      this.seek(oldest + 0.05);  // what we were watching has left the window
    }
  }
  this.evict();
  this.ui.show(this);
};

addQualityChoice(MsePlayer);
addFollowing(MsePlayer);

export { MsePlayer };
